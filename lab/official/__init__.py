"""The official HiFill TensorFlow checkpoint, read without TensorFlow (import-official)."""
