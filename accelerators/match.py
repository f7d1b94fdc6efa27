"""Linear-time, bounded matching of accelerator names (file names, titles, descriptions): no regex backtracking.

A text is cut to :data:`FIELD_LIMIT` characters, lower-cased and split once into letter runs and digit runs (a
file extension, the last token, is dropped)
(``"Hyper-SD15-8steps-CFG"`` → ``hyper sd 15 8 steps cfg``) by a single-character-class scan; every rule is then a
set of checks on those tokens or on their concatenation (``hypersd158stepscfg``), each linear in the text. So a
crafted 1 MB ``modelspec.title`` costs what its first :data:`FIELD_LIMIT` characters cost (issue 22, item 6: the
regexes this replaces took 46 s on ``'hypersd' × 16000``).

A rule (:class:`NameRule`) is a tuple of atoms, all of which must hold:

* ``"hypersd"``      the concatenation contains it (separators are ignored: Hyper-SD, hyper_sd, HyperSD);
* ``"=pcm"``         a token equals it (a letter run ``pcm`` between non-letters: not ``upcm``);
* ``"^lcm"``         a token starts with it (``lcm``, ``lcmlora``, ``sd15lcm`` → ``sd 15 lcm``; not ``animatelcm``);
* ``"==sd15lorabeta"`` the whole concatenation equals it (a generic published name, e.g. ``sd15_lora_beta``);
* ``"steps=1"``      the step count the name carries (:func:`steps_in_tokens`) equals it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

FIELD_LIMIT = 1024  # characters of one name/metadata field that detection reads
TOKEN = re.compile(r"[a-z]+|[0-9]+")  # one character class per token: each character is read once
MAX_STEP_DIGITS = 2
EXTENSIONS = ("safetensors", "ckpt", "pt", "pth", "bin")  # a file name's last token, dropped


@dataclass(frozen=True)
class Tokens:
    """A text as detection sees it: its tokens and their concatenation."""

    words: tuple[str, ...]
    joined: str

    @classmethod
    def of(cls, text: str) -> Tokens:
        words = tuple(TOKEN.findall(str(text)[:FIELD_LIMIT].lower()))
        if words and words[-1] in EXTENSIONS:
            words = words[:-1]
        return cls(words, "".join(words))


def steps_in_tokens(tokens: Tokens) -> int | None:
    """The step count a name carries: a 1-2 digit token followed by ``step``/``steps`` (``8steps``, ``4-step``)."""
    words = tokens.words
    for index in range(len(words) - 1):
        word, following = words[index], words[index + 1]
        if word.isdigit() and len(word) <= MAX_STEP_DIGITS and following.startswith("step"):
            return int(word)
    return None


def _atom_holds(atom: str, tokens: Tokens) -> bool:
    if atom.startswith("=="):
        return tokens.joined == atom[2:]
    if atom.startswith("="):
        return atom[1:] in tokens.words
    if atom.startswith("^"):
        return any(word.startswith(atom[1:]) for word in tokens.words)
    if atom.startswith("steps="):
        return steps_in_tokens(tokens) == int(atom[len("steps="):])
    return atom in tokens.joined


@dataclass(frozen=True)
class NameRule:
    """All of ``atoms`` hold (module docstring)."""

    atoms: tuple[str, ...]

    def matches(self, tokens: Tokens) -> bool:
        return all(_atom_holds(atom, tokens) for atom in self.atoms)


def rules(*specs: str) -> tuple[NameRule, ...]:
    """``rules("hypersd cfg", "=pcm")``: one rule per string, atoms separated by spaces."""
    return tuple(NameRule(tuple(spec.split())) for spec in specs)
