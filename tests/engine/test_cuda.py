"""The engine on a CUDA GPU: the same answers as PEFT's PeftModel there, every kernel, through
the adapter pool and the continuous-batching scheduler. Skipped where no GPU is present; run
on a lent GPU machine (see README: benchmarks and GPU checks)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from backend.storage.local import DirectoryStore
from inference_node.engine import AdapterPool, MultiLoraModel, Scheduler, load_adapter
from inference_node.engine.packaging import put_adapter
from inference_node.engine.sampling import SamplingParams
from tests.engine.conftest import MAX_RANK, load_base, peft_reference
from tests.engine.test_model import ADAPTER_ORDER, ROW_SLOTS, make_prompts, pad_batch
from tests.engine.test_scheduler import ByteTokenizer, prompts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = "cuda"
ATOL = 1e-4  # fp32; TF32 matmuls are off by default in PyTorch


@pytest.fixture(scope="module")
def references(base_folder: Path, adapter_folders: dict[str, Path]) -> dict[int, torch.nn.Module]:
    refs: dict[int, torch.nn.Module] = {
        slot: peft_reference(base_folder, adapter_folders[name]).to(CUDA)
        for slot, name in enumerate(ADAPTER_ORDER)
    }
    refs[-1] = load_base(base_folder).to(CUDA)
    return refs


def cuda_engine(
    base_folder: Path, adapter_folders: dict[str, Path], dtype: torch.dtype = torch.float32
) -> MultiLoraModel:
    model = MultiLoraModel(load_base(base_folder).to(CUDA, dtype), slots=6, max_rank=MAX_RANK)
    for slot, name in enumerate(ADAPTER_ORDER):
        model.load_adapter(slot, load_adapter(adapter_folders[name], model.spec, MAX_RANK))
    return model


@pytest.mark.parametrize("kernel", ["auto", "segments", "gather"])
def test_mixed_batch_logits_equal_peft_on_cuda(
    base_folder: Path,
    adapter_folders: dict[str, Path],
    references: dict[int, torch.nn.Module],
    kernel: str,
) -> None:
    model = cuda_engine(base_folder, adapter_folders)
    model.set_kernel(kernel)  # type: ignore[arg-type]
    assert all(layer.lora_a.is_cuda for layer in model.lora_layers.values())
    batch = make_prompts()
    ids, mask = pad_batch(batch, "left")
    logits = model(ids.to(CUDA), mask.to(CUDA), torch.tensor(ROW_SLOTS))  # [batch, seq, vocab]
    for row, (prompt, slot) in enumerate(zip(batch, ROW_SLOTS, strict=True)):
        with torch.no_grad():
            expected = references[slot](input_ids=torch.tensor([prompt], device=CUDA)).logits[0]
        torch.testing.assert_close(logits[row, -len(prompt) :], expected, atol=ATOL, rtol=0)


def test_greedy_decoding_on_cuda_equals_cpu(
    base_folder: Path, adapter_folders: dict[str, Path]
) -> None:
    batch = make_prompts()
    ids, mask = pad_batch(batch, "left")
    slots = torch.tensor(ROW_SLOTS)
    on_gpu = cuda_engine(base_folder, adapter_folders).generate_greedy(
        ids.to(CUDA), mask.to(CUDA), slots, 12
    )
    cpu = MultiLoraModel(load_base(base_folder), slots=6, max_rank=MAX_RANK)
    for slot, name in enumerate(ADAPTER_ORDER):
        cpu.load_adapter(slot, load_adapter(adapter_folders[name], cpu.spec, MAX_RANK))
    assert on_gpu.cpu().tolist() == cpu.generate_greedy(ids, mask, slots, 12).tolist()


def test_bfloat16_engine_is_as_close_to_fp32_as_peft_in_bfloat16(
    base_folder: Path, adapter_folders: dict[str, Path], references: dict[int, torch.nn.Module]
) -> None:
    """bf16 rounds every op, so neither matches fp32 closely: the engine's error against the
    fp32 reference must stay within twice PEFT's own bf16 error on the same rows."""
    model = cuda_engine(base_folder, adapter_folders, torch.bfloat16)
    assert next(iter(model.lora_layers.values())).lora_a.dtype == torch.bfloat16
    batch = make_prompts()
    ids, mask = pad_batch(batch, "left")
    logits = model(ids.to(CUDA), mask.to(CUDA), torch.tensor(ROW_SLOTS)).float()
    for row, (prompt, slot) in enumerate(zip(batch, ROW_SLOTS, strict=True)):
        ids_row = torch.tensor([prompt], device=CUDA)
        with torch.no_grad():
            expected = references[slot](input_ids=ids_row).logits[0]
            peft_bf16 = copy.deepcopy(references[slot]).to(torch.bfloat16)
            theirs = peft_bf16(input_ids=ids_row).logits[0].float()
        ours = logits[row, -len(prompt) :]
        peft_error = (theirs - expected).abs().max().item()
        assert (ours - expected).abs().max().item() <= 2 * peft_error + 1e-3, (row, slot)


def test_scheduler_on_cuda_serves_a_mixed_batch_through_the_pool(
    base_folder: Path,
    adapter_folders: dict[str, Path],
    references: dict[int, torch.nn.Module],
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "store")
    model = MultiLoraModel(load_base(base_folder).to(CUDA), slots=3, max_rank=MAX_RANK)
    pool = AdapterPool(model, store, tmp_path / "cache", cpu_capacity_bytes=1 << 30)
    for name in ADAPTER_ORDER:
        pool.register(name, put_adapter(store, adapter_folders[name]))
    adapters = [*ADAPTER_ORDER, None, "all_r8", "ko_r16"]  # 4 adapters through 3 slots
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    with Scheduler(model, ByteTokenizer(), pool) as scheduler:  # type: ignore[arg-type]
        scheduler.stop_token_ids = frozenset()
        batch = prompts(len(adapters), seed=5)
        handles = [
            scheduler.submit(p, greedy, adapter=a) for p, a in zip(batch, adapters, strict=True)
        ]
        for handle, adapter in zip(handles, adapters, strict=True):
            slot = -1 if adapter is None else ADAPTER_ORDER.index(adapter)
            with torch.no_grad():
                expected = references[slot].generate(
                    input_ids=torch.tensor([handle.prompt_ids], device=CUDA),
                    attention_mask=torch.ones(1, len(handle.prompt_ids), device=CUDA).long(),
                    max_new_tokens=8,
                    min_new_tokens=8,
                    do_sample=False,
                    pad_token_id=0,
                )[0, len(handle.prompt_ids) :]
            assert list(handle.result(timeout=120).token_ids) == expected.tolist()
        sampled = SamplingParams(max_tokens=8, temperature=0.8, top_p=0.9, seed=11)
        alone = scheduler.submit(batch[0], sampled, adapter="all_r8").result(timeout=120)
        crowd = [scheduler.submit(p, greedy, adapter="ko_r16") for p in batch[1:]]
        together = scheduler.submit(batch[0], sampled, adapter="all_r8").result(timeout=120)
        for handle in crowd:
            handle.result(timeout=120)
    assert alone.token_ids == together.token_ids
    assert pool.stats().device_evictions >= 1  # slots were reused on the GPU
