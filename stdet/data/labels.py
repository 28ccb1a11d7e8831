"""AVA action classes: the 80-action table, label map files (pbtxt) and custom class subsets.

Two pbtxt forms exist and both are read::

    item {                                label {
      name: "bend/bow (at the waist)"       name: "bend/bow (at the waist)"
      id: 1                                 label_id: 1
    }                                       label_type: PERSON_MOVEMENT
                                          }

The first is ActivityNet's evaluation list (the 60 evaluated classes), the second the full 80-action
list shipped with the AVA annotations.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .errors import AVADataError
from .io import atomic_write_text, open_text_lines

PERSON_MOVEMENT = "PERSON_MOVEMENT"
OBJECT_MANIPULATION = "OBJECT_MANIPULATION"
PERSON_INTERACTION = "PERSON_INTERACTION"

# (id, name) of the 80 AVA actions; the group follows from the id (movement <= 14, interaction >= 64).
_AVA_ACTIONS = [
    (1, "bend/bow (at the waist)"), (2, "crawl"), (3, "crouch/kneel"), (4, "dance"), (5, "fall down"),
    (6, "get up"), (7, "jump/leap"), (8, "lie/sleep"), (9, "martial art"), (10, "run/jog"),
    (11, "sit"), (12, "stand"), (13, "swim"), (14, "walk"), (15, "answer phone"),
    (16, "brush teeth"), (17, "carry/hold (an object)"), (18, "catch (an object)"), (19, "chop"),
    (20, "climb (e.g., a mountain)"), (21, "clink glass"), (22, "close (e.g., a door, a box)"),
    (23, "cook"), (24, "cut"), (25, "dig"), (26, "dress/put on clothing"), (27, "drink"),
    (28, "drive (e.g., a car, a truck)"), (29, "eat"), (30, "enter"), (31, "exit"), (32, "extract"),
    (33, "fishing"), (34, "hit (an object)"), (35, "kick (an object)"), (36, "lift/pick up"),
    (37, "listen (e.g., to music)"), (38, "open (e.g., a window, a car door)"), (39, "paint"),
    (40, "play board game"), (41, "play musical instrument"), (42, "play with pets"),
    (43, "point to (an object)"), (44, "press"), (45, "pull (an object)"), (46, "push (an object)"),
    (47, "put down"), (48, "read"), (49, "ride (e.g., a bike, a car, a horse)"), (50, "row boat"),
    (51, "sail boat"), (52, "shoot"), (53, "shovel"), (54, "smoke"), (55, "stir"),
    (56, "take a photo"), (57, "text on/look at a cellphone"), (58, "throw"),
    (59, "touch (an object)"), (60, "turn (e.g., a screwdriver)"), (61, "watch (e.g., TV)"),
    (62, "work on a computer"), (63, "write"), (64, "fight/hit (a person)"),
    (65, "give/serve (an object) to (a person)"), (66, "grab (a person)"), (67, "hand clap"),
    (68, "hand shake"), (69, "hand wave"), (70, "hug (a person)"), (71, "kick (a person)"),
    (72, "kiss (a person)"), (73, "lift (a person)"), (74, "listen to (a person)"),
    (75, "play with kids"), (76, "push (another person)"),
    (77, "sing to (e.g., self, a person, a group)"), (78, "take (an object) from (a person)"),
    (79, "talk to (e.g., self, a person, a group)"), (80, "watch (a person)"),
]

# The 60 classes of ActivityNet's AVA evaluation list (the other 20 have too few val examples).
AVA_EVALUATED_IDS = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37,
    38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
    69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
)


def action_group(class_id: int) -> str:
    """The AVA group of an action id: person movement (<= 14), object manipulation, interaction (>= 64)."""
    if class_id <= 14:
        return PERSON_MOVEMENT
    if class_id >= 64:
        return PERSON_INTERACTION
    return OBJECT_MANIPULATION


@dataclass(frozen=True)
class ActionClass:
    id: int
    name: str
    group: str


AVA_ACTIONS: dict[int, ActionClass] = {i: ActionClass(i, n, action_group(i)) for i, n in _AVA_ACTIONS}


def ava_label_map(ids: Iterable[int] | None = None) -> dict[int, str]:
    """``{id: name}`` for the given AVA ids (all 80 when None), in id order."""
    ids = sorted(AVA_ACTIONS) if ids is None else sorted(ids)
    return {i: AVA_ACTIONS[i].name for i in ids}


_FIELD = re.compile(r'^\s*(name|id|label_id|label_type|display_name)\s*:\s*(.*?)\s*$')


def read_label_map(path: str | os.PathLike) -> dict[int, str]:
    """Read a pbtxt label map (``item { name: id: }`` or ``label { name: label_id: }``).

    Returns ``{class_id: name}`` in file order. Raises :class:`AVADataError` naming the line of a
    malformed field, a duplicated id, or an entry that lacks a name or an id.
    """
    # imported here: annotations imports this module for the action table

    path = Path(path)
    if not path.is_file():
        raise AVADataError(path, "label map file not found")
    with open_text_lines(path) as lines:
        text = "".join(lines)
    labels: dict[int, str] = {}
    entry: dict[str, str] | None = None
    entry_line = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        # Fields may share a line with the braces ("item { name: "x" id: 3 }"): split them apart.
        for token in _split_pbtxt_line(raw, path, lineno):
            if token in ("item {", "label {"):
                if entry is not None:
                    raise AVADataError(path, "entry opened before the previous one closed", line=lineno)
                entry, entry_line = {}, lineno
            elif token == "}":
                if entry is None:
                    raise AVADataError(path, "'}' without an open entry", line=lineno)
                _close_entry(path, entry, entry_line, labels)
                entry = None
            else:
                m = _FIELD.match(token)
                if m is None or entry is None:
                    raise AVADataError(path, f"unexpected text {token!r}", line=lineno)
                key, value = m.groups()
                if key == "name" or key == "display_name":
                    if not (len(value) >= 2 and value[0] == value[-1] == '"'):
                        raise AVADataError(path, f"name must be quoted, got {value}", line=lineno)
                    entry.setdefault("name", value[1:-1])
                elif key in ("id", "label_id"):
                    if not (value.isascii() and value.isdigit()):  # int() also takes "٣"
                        raise AVADataError(path, f"{key} must be a positive integer, got {value!r}",
                                           line=lineno)
                    entry["id"] = value
                    entry["id_line"] = str(lineno)
    if entry is not None:
        raise AVADataError(path, "entry not closed at end of file", line=entry_line)
    if not labels:
        raise AVADataError(path, "no label entries found")
    return labels


def _split_pbtxt_line(raw: str, path: Path, lineno: int) -> list[str]:
    tokens: list[str] = []
    rest = raw.strip()
    while rest:
        m = re.match(r'^(item|label)\s*\{', rest)
        if m:
            tokens.append(f"{m.group(1)} {{")
            rest = rest[m.end():].strip()
            continue
        if rest.startswith("}"):
            tokens.append("}")
            rest = rest[1:].strip()
            continue
        m = re.match(r'^\w+\s*:\s*("[^"]*"|[^\s}]+)', rest)
        if m is None:
            raise AVADataError(path, f"cannot parse {rest!r}", line=lineno)
        tokens.append(m.group(0))
        rest = rest[m.end():].strip()
    return tokens


def _close_entry(path: Path, entry: dict[str, str], line: int, labels: dict[int, str]) -> None:
    if "id" not in entry:
        raise AVADataError(path, "entry has no id/label_id", line=line)
    if "name" not in entry:
        raise AVADataError(path, "entry has no name", line=line)
    class_id = int(entry["id"])
    if class_id in labels:
        raise AVADataError(path, f"class id {class_id} defined twice", line=int(entry["id_line"]))
    labels[class_id] = entry["name"]


def write_label_map(path: str | os.PathLike, labels: dict[int, str], *, form: str = "label") -> None:
    """Write ``{id: name}`` as pbtxt: ``form="label"`` (full list, with label_type) or ``"item"``."""
    lines = []
    for class_id, name in labels.items():
        if form == "label":
            lines += ["label {", f'  name: "{name}"', f"  label_id: {class_id}",
                      f"  label_type: {action_group(class_id)}", "}"]
        elif form == "item":
            lines += ["item {", f'  name: "{name}"', f"  id: {class_id}", "}"]
        else:
            raise ValueError(f"form must be 'label' or 'item', got {form!r}")
    atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class CustomClasses:
    """A subset of AVA classes trained as a smaller problem (MMAction2's ``custom_classes``).

    ``num_classes = len(ids) + 1``; index 0 is not an action; new index ``i > 0`` is original class
    ``ids[i - 1]``. Ids are checked against the *full* label map (53 "shovel", for example, is not
    among the 60 evaluated classes).
    """

    ids: tuple[int, ...]

    @classmethod
    def from_ids(cls, ids: Sequence[int], label_map: dict[int, str],
                 label_map_path: str | os.PathLike = "<label map>") -> "CustomClasses":
        ids = tuple(int(i) for i in ids)
        if not ids:
            raise AVADataError(label_map_path, "custom classes must not be empty")
        if 0 in ids:
            raise AVADataError(label_map_path, "custom classes must not contain 0 (not an action)")
        if len(set(ids)) != len(ids):
            raise AVADataError(label_map_path, f"custom classes repeat an id: {list(ids)}")
        unknown = [i for i in ids if i not in label_map]
        if unknown:
            raise AVADataError(label_map_path, f"custom classes {unknown} are not in the label map",
                               key=",".join(map(str, unknown)))
        return cls(ids)

    @property
    def num_classes(self) -> int:
        return len(self.ids) + 1

    def to_new(self, original_id: int) -> int | None:
        """New index of an original class id, or None when the class is not kept."""
        try:
            return self.ids.index(original_id) + 1
        except ValueError:
            return None

    def to_original(self, new_index: int) -> int:
        if not 1 <= new_index <= len(self.ids):
            raise IndexError(f"new index {new_index} outside 1..{len(self.ids)}")
        return self.ids[new_index - 1]

    def check_topk(self, topk: Sequence[int]) -> None:
        """MMAction2 requires every top-k to stay below ``num_classes``."""
        bad = [k for k in topk if k >= self.num_classes]
        if bad:
            raise ValueError(f"topk {bad} must be < num_classes={self.num_classes} "
                             f"for {len(self.ids)} custom classes")
