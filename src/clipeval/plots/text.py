"""User text in figures: captions, checkpoint names, dataset and label names are drawn as written.

Matplotlib reads a string with an even number of unescaped ``$`` as mathtext: a caption such as
``"$5 off, now $10"`` comes out garbled in italics, and a malformed one (``"$\\frac{"``) makes the
figure fail to draw. :func:`plain` escapes every ``$`` (``\\$``), which matplotlib draws as a
literal dollar, so the drawn text equals the input; nothing else in the string changes (outside
mathtext a backslash is drawn as it is). Every plotting function passes user text through it,
after any wrapping (a wrap must not split ``\\`` from its ``$``). With ``text.usetex`` on,
captions would go through TeX; the project never turns it on.
"""

from __future__ import annotations


def plain(text) -> str:
    """``text`` (any value, as ``str``) escaped so matplotlib draws it literally, never as mathtext."""
    return str(text).replace("$", r"\$")
