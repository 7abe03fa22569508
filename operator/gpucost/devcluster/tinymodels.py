"""Tiny Hugging Face models for the tests and benchmarks, built from configs and trained here: no
download. The text is the docstrings of the Python standard library (every machine has it); the
tokenizer is a byte-level BPE trained on it with ``tokenizers``. A causal LM is trained until more
training stops helping (a barely trained model hides every quantization loss), then saved in
bf16 as a real checkpoint is. A BERT classifier learns which of 28 modules (some in confusable
pairs: logging and logging.handlers, socket and ssl...) an 8-word window of a docstring
paragraph comes from: hard enough that it stays well short of 100 %, so a compression that loses
something shows it. Built once per shape and cached outside the repo.

``python -m gpucost.devcluster.tinymodels`` builds them with progress (about 7 minutes on one
core); the tests' session fixtures call :func:`causal_lm` and :func:`classifier` and reuse the
cache.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import random
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from gpucost.devcluster.binaries import cache_root

MODULES = (
    "argparse asyncio base64 bisect calendar collections concurrent.futures configparser "
    "contextlib copy csv dataclasses datetime decimal difflib email.message enum fractions "
    "functools glob gzip hashlib heapq hmac html.parser http.client http.server inspect io "
    "ipaddress itertools json logging logging.handlers mailbox mimetypes multiprocessing "
    "numbers operator os pathlib pickle pprint queue random re sched secrets selectors shelve "
    "shlex shutil signal smtplib socket socketserver sqlite3 ssl statistics string struct "
    "subprocess tarfile tempfile textwrap threading timeit tokenize traceback types typing "
    "unittest unittest.mock urllib.parse urllib.request uuid warnings weakref xml.dom.minidom "
    "xml.etree.ElementTree zipfile zoneinfo"
).split()


@dataclass(frozen=True)
class CausalShape:
    """A Llama with tied embeddings, so that (as in a real 8B model, where embeddings are ~13 %)
    most weights are the decoder Linears that quantization shrinks."""

    vocab: int = 1024
    hidden: int = 128
    intermediate: int = 384
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    context: int = 256
    steps: int = 1500
    batch: int = 16
    seq: int = 128
    lr: float = 3e-3
    seed: int = 0


TOPICS = (
    "argparse asyncio configparser difflib email.message http.server inspect ipaddress json "
    "logging logging.handlers pathlib shutil smtplib socket ssl statistics subprocess tarfile "
    "threading traceback typing unittest unittest.mock urllib.request uuid xml.etree.ElementTree "
    "zipfile"
).split()
"""The classifier's classes: the modules with 40 or more docstring paragraphs, some in
confusable pairs (logging and logging.handlers, unittest and unittest.mock, socket and ssl)."""


@dataclass(frozen=True)
class ClassifierShape:
    hidden: int = 128
    intermediate: int = 512
    layers: int = 4
    heads: int = 4
    steps: int = 600
    batch: int = 32
    seq: int = 32
    lr: float = 1e-3
    words: int = 8
    """Each text is a window of this many words from its paragraph, at a seeded offset: a whole
    paragraph (or its first words) names its module too often."""
    seed: int = 0


def _paragraphs(name: str) -> list[str]:
    """One module's docstring paragraphs of 60 characters or more, in a fixed order."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return []
    docs = [inspect.getdoc(module)]
    for _, member in sorted(vars(module).items()):
        if inspect.isclass(member) or inspect.isfunction(member):
            docs.append(inspect.getdoc(member))
            if inspect.isclass(member):
                docs += [inspect.getdoc(m) for _, m in sorted(vars(member).items())]
    found = []
    for doc in docs:
        for para in (doc or "").split("\n\n"):
            text = " ".join(para.split())
            if len(text) >= 60:
                found.append(text)
    return found


def corpus() -> list[str]:
    """Paragraphs of the standard library's docstrings, deduplicated, in a fixed order."""
    return list(dict.fromkeys(p for name in MODULES for p in _paragraphs(name)))


def topics(words: int, seed: int = 0) -> list[tuple[str, int]]:
    """(a window of ``words`` words from a paragraph, class) for the TOPICS modules; a text found
    in two of them is left out (its label would be a coin toss)."""
    found: dict[str, set[int]] = {}
    pick = random.Random(seed)
    for label, name in enumerate(TOPICS):
        for para in dict.fromkeys(_paragraphs(name)):
            split = para.split()
            at = pick.randrange(max(1, len(split) - words + 1))
            found.setdefault(" ".join(split[at : at + words]), set()).add(label)
    return [(text, labels.pop()) for text, labels in found.items() if len(labels) == 1]


def write_text(folder: Path, seed: int = 0) -> Path:
    """The corpus as a .txt of paragraphs (what a CompressionJob's dataset may be)."""
    paragraphs = corpus()
    random.Random(seed).shuffle(paragraphs)
    path = folder / "stdlib-docs.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def causal_lm(shape: CausalShape = CausalShape(), progress: bool = False) -> Path:
    """The trained model's directory (config.json, model.safetensors, tokenizer) and beside it
    ``stdlib-docs.txt``, the text it was trained on."""

    def build(tmp: Path) -> None:
        _train(shape, write_text(tmp, shape.seed), tmp / "llama", progress)

    # not the corpus itself: what a module exposes depends on what the process imported before
    return _cached([asdict(shape), sys.version_info[:2], MODULES], "llama", build)


def classifier(shape: ClassifierShape = ClassifierShape(), progress: bool = False) -> Path:
    """A trained BertForSequenceClassification's directory (its tokenizer is the causal LM's)
    and beside it ``stdlib-topics.jsonl``: ``{"text", "label"}`` rows, label the module's name."""

    def build(tmp: Path) -> None:
        words = causal_lm(progress=progress)  # its tokenizer, trained on the same docstrings
        rows = topics(shape.words, shape.seed)
        random.Random(shape.seed).shuffle(rows)
        lines = [json.dumps({"text": t, "label": TOPICS[y]}) for t, y in rows]
        (tmp / "stdlib-topics.jsonl").write_text("\n".join(lines) + "\n")
        _train_classifier(shape, rows, words, tmp / "bert", progress)

    return _cached([asdict(shape), sys.version_info[:2], TOPICS], "bert", build)


def _cached(key: list, name: str, build) -> Path:
    """``name``'s directory in the cache folder of ``key``, built into a temporary folder by
    ``build`` the first time (renamed into place once complete, so a killed build is redone)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / "tiny-models" / digest
    if (folder / name / "config.json").exists():
        return folder / name
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / name).mkdir(parents=True)
    build(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder / name


def _train_classifier(
    shape: ClassifierShape, rows: list[tuple[str, int]], words: Path, out: Path, progress: bool
) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.set_num_threads(1)
    torch.manual_seed(shape.seed)
    tokenizer = AutoTokenizer.from_pretrained(words)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(TOPICS),
        id2label=dict(enumerate(TOPICS)),
        label2id={name: i for i, name in enumerate(TOPICS)},
    )
    model = BertForSequenceClassification(config)
    train = rows[: int(len(rows) * 0.9)]  # the worker's held-out split is its own
    enc = tokenizer(
        [t for t, _ in train],
        truncation=True,
        max_length=shape.seq,
        padding="max_length",
        return_tensors="pt",
    )
    labels = torch.tensor([y for _, y in train])

    def draw(generator: torch.Generator) -> dict:
        pick = torch.randint(0, len(labels), (shape.batch,), generator=generator)
        return {
            "input_ids": enc["input_ids"][pick],
            "attention_mask": enc["attention_mask"][pick],
            "labels": labels[pick],
        }

    _fit(model, shape.steps, shape.lr, shape.seed, draw, "the tiny BERT", progress)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _fit(model, steps: int, lr: float, seed: int, draw, what: str, progress: bool) -> None:
    """AdamW with a one-cycle schedule and clipped gradients, on ``steps`` batches ``draw``n
    with a generator seeded by ``seed``."""
    import torch
    from rich.progress import Progress

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"training {what}", total=steps)
        for _ in range(steps):
            loss = model(**draw(generator)).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            bar.update(task, advance=1, description=f"training {what} (loss {loss:.2f})")


def _tokenizer(shape: CausalShape, text: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.vocab,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train([str(text)], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def _train(shape: CausalShape, text: Path, out: Path, progress: bool) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)  # two threads on a shared 2-core machine ran 2-10x slower
    torch.manual_seed(shape.seed)
    tokenizer = _tokenizer(shape, text)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    paragraphs = text.read_text().split("\n\n")
    train = paragraphs[: int(len(paragraphs) * 0.9)]  # the worker's held-out split is its own
    ids = [t for p in train for t in tokenizer(p)["input_ids"] + [tokenizer.eos_token_id]]
    stream = torch.tensor(ids)

    def draw(generator: torch.Generator) -> dict:
        starts = torch.randint(0, len(stream) - shape.seq - 1, (shape.batch,), generator=generator)
        batch = torch.stack([stream[s : s + shape.seq] for s in starts.tolist()])
        return {"input_ids": batch, "labels": batch}

    _fit(model, shape.steps, shape.lr, shape.seed, draw, "the tiny Llama", progress)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    print(causal_lm(progress=True))
    print(classifier(progress=True))
