"""GIMP-independent parts of the HiFill GIMP plug-in (region maths, formats, fill planning, worker)."""
