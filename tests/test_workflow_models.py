"""Getting the file (issue 25): every accelerator record's download, and the per-node ``properties.models`` metadata
(name, url, directory) of the example workflows built from it, fit what the ComfyUI frontend reads to offer the
download of a missing model.

The frontend's own rules are read from the installed ``comfyui_frontend_package`` (its source maps carry the
TypeScript): the workflow schema's ``zModelFile`` (``workflowSchema.ts``: ``name``, ``url`` (``z.string().url()``),
``hash`` / ``hash_type`` optional, ``directory``) and the download filter (``MissingModelsWarning.vue`` in 1.32,
``missingModelDownload.ts`` in 1.49: allowed URL prefixes and file suffixes). Where the package ships no source
maps the test falls back to the shape the frontend reads (:data:`FALLBACK_SCHEMA`, the rules of 1.32.9 / 1.49.6).
Nothing is downloaded.
"""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from lcm_lora_pack import accelerators
from lcm_lora_pack.devkit import workflows

# field → (is a URL, optional), as zModelFile of frontend 1.32.9 and 1.49.6
FALLBACK_SCHEMA = {"name": (False, False), "url": (True, False), "hash": (False, True), "hash_type": (False, True),
                   "directory": (False, False)}
FALLBACK_SOURCES = ("https://civitai.com/", "https://huggingface.co/", "http://localhost:")
FALLBACK_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")
MODEL_FILE = re.compile(r"const zModelFile = z\.object\(\{(?P<body>.*?)\}\)", re.S)
FIELD = re.compile(r"(\w+):\s*z\.string\(\)(?P<url>\.url\(\))?(?P<optional>\.optional\(\))?")
LIST = r"(?:{names})\s*=\s*\[(?P<body>[^\]]*)\]"


@cache
def frontend_rules() -> tuple[str, dict, tuple[str, ...], tuple[str, ...]]:
    """``(where, schema, allowed URL prefixes, allowed suffixes)`` from the installed frontend, else the fallback."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return "fallback (no comfyui_frontend_package)", FALLBACK_SCHEMA, FALLBACK_SOURCES, FALLBACK_SUFFIXES
    schema, sources, suffixes, where = None, None, None, []
    for path in sorted((Path(comfyui_frontend_package.__file__).parent / "static" / "assets").glob("*.js.map")):
        text = path.read_text(errors="ignore")
        if "zModelFile" not in text and "llowed" not in text and "ALLOWED_S" not in text:
            continue
        for source in json.loads(text).get("sourcesContent") or []:
            found = MODEL_FILE.search(source or "")
            if found and schema is None:
                schema = {m[1]: (bool(m["url"]), bool(m["optional"])) for m in FIELD.finditer(found["body"])}
                where.append(f"zModelFile in {path.name}")
            prefixes = re.search(LIST.format(names="allowedSources|ALLOWED_SOURCES"), source or "")
            endings = re.search(LIST.format(names="allowedSuffixes|ALLOWED_SUFFIXES"), source or "")
            if prefixes and endings and sources is None:
                sources = tuple(re.findall(r"'([^']+)'", prefixes["body"]))
                suffixes = tuple(re.findall(r"'([^']+)'", endings["body"]))
                where.append(f"download filter in {path.name}")
    return (", ".join(where) or "fallback (no source maps)", schema or FALLBACK_SCHEMA, sources or FALLBACK_SOURCES,
            suffixes or FALLBACK_SUFFIXES)


def _problems(entry: dict) -> list[str]:
    """What the frontend's schema and download filter find wrong with one ``models`` entry ([] if nothing)."""
    _, schema, sources, suffixes = frontend_rules()
    problems = [f"unknown field {key!r}" for key in entry if key not in schema]
    for key, (is_url, optional) in schema.items():
        if key not in entry:
            problems += [] if optional else [f"missing {key!r}"]
        elif not isinstance(entry[key], str):
            problems.append(f"{key!r} is not a string")
        elif is_url and not (urlsplit(entry[key]).scheme in ("http", "https") and urlsplit(entry[key]).netloc):
            problems.append(f"{key!r} is not a URL")
    if not any(str(entry.get("url", "")).startswith(prefix) for prefix in sources):
        problems.append(f"url not from {sources}")
    if not any(str(entry.get("name", "")).endswith(suffix) for suffix in suffixes):
        problems.append(f"name does not end in {suffixes}")
    return problems


def _downloads() -> dict[str, accelerators.Download]:
    return {d.name: d for record in accelerators.records() for d in record.downloads}


def test_the_frontend_rules_were_read_from_the_installed_frontend():
    """Both hosts' frontends (1.32.9, 1.49.6) ship their TypeScript in source maps: the test reads their rules, not
    the fallback (so a frontend that changes its schema changes this test)."""
    where, schema, sources, suffixes = frontend_rules()
    assert "zModelFile" in where and "download filter" in where, where
    assert {"name", "url", "directory"} <= set(schema) and schema["url"][0], schema
    assert "https://huggingface.co/" in sources and ".safetensors" in suffixes


@pytest.mark.parametrize("kind_and_name", [f"{r.kind}:{d.name}" for r in accelerators.records() for d in r.downloads])
def test_every_record_download_is_one_the_frontend_offers(kind_and_name):
    """Each record's download, as a ``models`` entry, passes the frontend's schema and download filter."""
    download = _downloads()[kind_and_name.split(":", 1)[1]]
    entry = {"name": download.name, "url": download.url + "?download=true", "directory": download.directory}
    assert _problems(entry) == _expected_problems(entry), (frontend_rules()[0], entry)
    assert download.url.rsplit("/", 1)[-1] == download.file.rsplit("/", 1)[-1]


def _expected_problems(entry: dict) -> list[str]:
    """Frontend 1.32.9 (ComfyUI 0.3.75) offers .safetensors / .sft only: AnimateLCM's motion module is published as
    .ckpt alone (docs/workflows.md says so); 1.49.6 (0.33.0) offers it. Every other entry passes."""
    suffixes = frontend_rules()[3]
    if entry["name"].endswith(".ckpt") and ".ckpt" not in suffixes:
        return [f"name does not end in {suffixes}"]
    return []


@pytest.mark.parametrize("name", workflows.example_names())
def test_example_workflow_nodes_offer_the_registry_downloads(name):
    """Every node of an example workflow that reads an accelerator file carries that record's download as
    ``properties.models`` (registry URL, the name detection recognises, its folder), valid for the frontend; the other
    models entries (base checkpoints) are valid too."""
    registry = _downloads()
    offered = 0
    for node in workflows.load_ui(name)["nodes"]:
        entries = node.get("properties", {}).get("models", [])
        for entry in entries:
            assert _problems(entry) == _expected_problems(entry), (name, node["type"], entry)
        values = [v for v in node.get("widgets_values") or [] if isinstance(v, str)]
        for value in values:
            if value in registry:
                download = registry[value]
                expected = {"name": value, "url": download.url + "?download=true", "directory": download.directory}
                assert expected in entries, (name, node["type"], entries)
                offered += 1
    uses_accelerator = any(v in registry for v in workflows.referenced_models(workflows.load_ui(name)))
    assert offered > 0 or not uses_accelerator, name


def test_the_lcm_lora_download_is_offered_under_the_name_detection_needs():
    """The LCM-LoRA is published as ``pytorch_lora_weights.safetensors``: the workflows offer it under
    ``lcm-lora-sdv1-5.safetensors`` (the frontend saves the download under ``name``), the file the loader names."""
    node = next(n for n in workflows.load_ui("sd15_lcm_lora_4step")["nodes"] if n["type"] == "LCMPack_LCMLoraLoader")
    assert node["properties"]["models"] == [{
        "name": "lcm-lora-sdv1-5.safetensors", "directory": "loras",
        "url": "https://huggingface.co/latent-consistency/lcm-lora-sdv1-5/resolve/main/pytorch_lora_weights.safetensors"
               "?download=true"}]
    assert accelerators.detect_name("lcm-lora-sdv1-5.safetensors").kind == "lcm"
