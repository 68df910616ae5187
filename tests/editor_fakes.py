"""The editors as the tests see them: fakes of Krita's scripting API (and its import wiring) and a
Python like an editor's without pyzmq and msgpack. No tests here.

The fakes keep pixels the way Krita does: one bytes buffer per layer over the whole canvas, integer
RGBA depths in B, G, R, A order, float depths in R, G, B, A, native endianness. A selection is one
byte per pixel. addChildNode and remove are recorded as one undo step each (what Krita 5.2's libkis
does: both run a single undo command); setPixelData is not undoable, as in Krita.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "plugin_krita"):
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))

import hifill_krita  # noqa: E402

assert Path(hifill_krita.__file__).parent == REPO / "plugin_krita" / "hifill_krita", hifill_krita.__file__

BYTES_PER_CHANNEL = {"U8": 1, "U16": 2, "F16": 2, "F32": 4}


class FakeSelection:
    def __init__(self, width: int, height: int) -> None:
        self.canvas_width, self.canvas_height = width, height
        self.mask = bytearray(width * height)

    def select_rect(self, x: int, y: int, w: int, h: int, value: int = 255) -> FakeSelection:
        for row in range(max(0, y), min(self.canvas_height, y + h)):
            for col in range(max(0, x), min(self.canvas_width, x + w)):
                self.mask[row * self.canvas_width + col] = value
        return self

    def _bounds(self) -> tuple[int, int, int, int]:
        width = self.canvas_width
        rows = [r for r in range(self.canvas_height) if any(self.mask[r * width : (r + 1) * width])]
        if not rows:
            return 0, 0, 0, 0
        cols = [
            c for c in range(self.canvas_width) if any(self.mask[r * self.canvas_width + c] for r in rows)
        ]
        return cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1

    def x(self) -> int:
        return self._bounds()[0]

    def y(self) -> int:
        return self._bounds()[1]

    def width(self) -> int:
        return self._bounds()[2]

    def height(self) -> int:
        return self._bounds()[3]

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:
        out = bytearray(w * h)
        for row in range(h):
            for col in range(w):
                cx, cy = x + col, y + row
                if 0 <= cx < self.canvas_width and 0 <= cy < self.canvas_height:
                    out[row * w + col] = self.mask[cy * self.canvas_width + cx]
        return bytes(out)


class FakeNode:
    def __init__(
        self,
        document: FakeDocument,
        name: str,
        node_type: str = "paintlayer",
        model: str | None = None,
        depth: str | None = None,
    ) -> None:
        self.document = document
        self._name = name
        self._type = node_type
        self._model = model or document.model
        self._depth = depth or document.depth
        self._profile = document.profile
        self._uid = uuid.uuid4()
        self._locked = False
        self.parent: FakeNode | None = None
        self.children: list[FakeNode] = []
        self.bpp = 4 * BYTES_PER_CHANNEL.get(self._depth, 1)
        self.data = bytearray(document.w * document.h * self.bpp)

    # Krita API
    def type(self) -> str:
        return self._type

    def name(self) -> str:
        return self._name

    def setName(self, name: str) -> None:
        self._name = name

    def uniqueId(self) -> uuid.UUID:
        return self._uid

    def locked(self) -> bool:
        return self._locked

    def colorModel(self) -> str:
        return self._model

    def colorDepth(self) -> str:
        return self._depth

    def colorProfile(self) -> str:
        return self._profile

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:
        out = bytearray(w * h * self.bpp)
        for row in range(h):
            cy = y + row
            if not 0 <= cy < self.document.h:
                continue
            for col in range(w):
                cx = x + col
                if 0 <= cx < self.document.w:
                    src = (cy * self.document.w + cx) * self.bpp
                    dst = (row * w + col) * self.bpp
                    out[dst : dst + self.bpp] = self.data[src : src + self.bpp]
        return bytes(out)

    def setPixelData(self, data: bytes, x: int, y: int, w: int, h: int) -> bool:
        if len(data) < w * h * self.bpp:
            return False
        for row in range(h):
            for col in range(w):
                cx, cy = x + col, y + row
                if 0 <= cx < self.document.w and 0 <= cy < self.document.h:
                    src = (row * w + col) * self.bpp
                    dst = (cy * self.document.w + cx) * self.bpp
                    self.data[dst : dst + self.bpp] = data[src : src + self.bpp]
        if self.parent is not None:
            self.document.unrecorded_writes += 1  # a write Krita would not put on the undo stack
        return True

    def parentNode(self) -> FakeNode | None:
        return self.parent

    def childNodes(self) -> list[FakeNode]:
        return list(self.children)

    def addChildNode(self, child: FakeNode, above: FakeNode | None) -> bool:
        index = self.children.index(above) + 1 if above is not None else len(self.children)
        self.children.insert(index, child)
        child.parent = self
        self.document.undo_stack.append(("add", self, child))
        return True

    def remove(self) -> bool:
        assert self.parent is not None
        parent = self.parent
        index = parent.children.index(self)
        parent.children.remove(self)
        self.parent = None
        self.document.undo_stack.append(("remove", parent, self, index))
        return True

    def duplicate(self) -> FakeNode:
        copy = FakeNode(self.document, self._name, self._type, self._model, self._depth)
        copy.data = bytearray(self.data)
        return copy


class FakeDocument:
    def __init__(
        self,
        width: int,
        height: int,
        model: str = "RGBA",
        depth: str = "U8",
        profile: str = "sRGB-elle-V2-srgbtrc.icc",
    ) -> None:
        self.w, self.h = width, height
        self.model, self.depth, self.profile = model, depth, profile
        self.root = FakeNode(self, "root", "grouplayer")
        self._selection: FakeSelection | None = None
        self._active: FakeNode | None = None
        self.undo_stack: list[tuple] = []
        self.unrecorded_writes = 0

    def add_layer(
        self, name: str, model: str | None = None, depth: str | None = None, node_type: str = "paintlayer"
    ) -> FakeNode:
        node = FakeNode(self, name, node_type, model, depth)
        self.root.children.append(node)
        node.parent = self.root
        self._active = node
        return node

    def set_selection(self, selection: FakeSelection | None) -> None:
        self._selection = selection

    def undo(self) -> None:
        entry = self.undo_stack.pop()
        if entry[0] == "add":
            _, parent, child = entry
            parent.children.remove(child)
            child.parent = None
        else:
            _, parent, node, index = entry
            parent.children.insert(index, node)
            node.parent = parent

    def layers(self) -> list[FakeNode]:
        return list(self.root.children)

    # Krita API
    def width(self) -> int:
        return self.w

    def height(self) -> int:
        return self.h

    def selection(self) -> FakeSelection | None:
        return self._selection

    def activeNode(self) -> FakeNode | None:
        return self._active

    def setActiveNode(self, node: FakeNode) -> None:
        self._active = node

    def nodeByUniqueID(self, uid: object) -> FakeNode | None:
        stack = list(self.root.children)
        while stack:
            node = stack.pop()
            if node.uniqueId() == uid:
                return node
            stack.extend(node.children)
        return None

    def createNode(self, name: str, node_type: str) -> FakeNode:
        return FakeNode(self, name, node_type)

    def waitForDone(self) -> None:
        pass


# ------------------------------------------------------------------------------------- documents

DOCUMENT_W, DOCUMENT_H = 40, 30


def bgra_u8(x: int, y: int) -> bytes:
    return bytes([(3 * x + y) % 256, (x * y) % 256, (5 * y + 7) % 256, 255])  # B, G, R, A


def make_document(depth: str = "U8", width: int = DOCUMENT_W, height: int = DOCUMENT_H) -> FakeDocument:
    """A document with one layer "Photo" of a known pattern in `depth` (U8, U16 or F32)."""
    document = FakeDocument(width, height, depth=depth)
    layer = document.add_layer("Photo")
    for y in range(height):
        for x in range(width):
            if depth == "U8":
                pixel = bgra_u8(x, y)
            elif depth == "U16":
                pixel = struct.pack("=4H", 100 * x, 200 * y, 1000 + x * y, 65535)
            else:
                pixel = struct.pack("=4f", x / DOCUMENT_W, y / DOCUMENT_H, 0.5, 1.0)
            layer.setPixelData(pixel, x, y, 1, 1)
    document.unrecorded_writes = 0
    return document


# ---------------------------------------------------------------------- an editor's bare Python


def run_without_pyzmq_and_msgpack(folder: Path, code: str) -> str:
    """stdout of `code` run by a fresh Python in the checkout with `folder` first on sys.path and every
    import of pyzmq or msgpack failing (as in an editor whose Python lacks them); fails the test on an
    error."""
    prelude = (
        "import sys\n"
        "sys.modules['zmq'] = sys.modules['msgpack'] = None\n"
        f"sys.path.insert(0, {str(folder)!r})\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()
