"""Tiny random models and a local tokenizer, built deterministically with no download.

The demo, the tests and the benchmarks need real Hugging Face folders that vLLM,
``AutoModelForCausalLM``/``AutoModelForSeq2SeqLM`` and Ray Train all load, but must
never touch a hub. This module builds them from a seed:

* :func:`build_tokenizer` trains a byte-level BPE (any text encodes, there is no
  ``<unk>`` surprise) on a corpus embedded below: generic English plus the
  vocabulary of the multiple-choice prompts (``Question``, ``Answer Choices``,
  ``(a)``, ``Rationale``, ``Verdict``, ``predict:`` ...). Same seed and vocab size
  give a byte-identical ``tokenizer.json``.
* :func:`build_tiny_model` writes a random Llama, Qwen2 (causal) or T5 (seq2seq) in
  safetensors, with the tokenizer and a ``generation_config.json``, in one folder.
* :func:`tiny_model_path` builds a :class:`~tinyllm_ray.config.TinyModelConfig` once
  into a cache folder keyed by a hash of its parameters; concurrent processes race
  safely (each builds in a private temporary folder, the first atomic rename wins).

Every tiny model of one ``vocab_size`` shares the same vocabulary (tokenizer seed 0);
the model ``seed`` only changes the weights, so teachers and students built with
different seeds agree on token ids. Families differ only in the special tokens added
on encode, as the real ones do: Llama prepends ``<s>``, T5 appends ``</s>``, Qwen2
adds nothing.

Why head_dim 64: vLLM's CPU attention kernel only implements head sizes
32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 (``CPUAttentionBackend``);
``hidden_size 128 / 2 heads`` gives 64, the smallest common choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # heavy imports stay inside the functions
    from transformers import PreTrainedTokenizerFast

    from tinyllm_ray.config import TinyModelConfig

Family = Literal["llama", "qwen2", "t5"]
FAMILIES: tuple[str, ...] = ("llama", "qwen2", "t5")
CAUSAL_FAMILIES: tuple[str, ...] = ("llama", "qwen2")

#: Head sizes vLLM's CPU attention backend implements (vllm 0.32 ``CPUAttentionBackend``).
VLLM_CPU_HEAD_SIZES: tuple[int, ...] = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
MAX_POSITIONS = 2048
MIN_VOCAB = 300  # 256 byte symbols + 4 specials + a few merges

#: Bump when the corpus, the tokenizer recipe or the model recipe changes: it is part
#: of the cache key, so stale cached folders are never reused.
BUILD_VERSION = 1
MARKER = "tinyllm_tiny.json"

# Seeded init goes through torch's global RNG (``nn.init`` takes no generator), so two
# threads building at once would interleave draws: serialise them.
_INIT_LOCK = threading.Lock()

#: Simple role-prefixed chat template (ray.data.llm's chat stage needs one). Llama
#: folders get ``{{ bos_token }}`` in front, as real Llama templates do, because chat
#: prompts are tokenized without adding special tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}\n"
    "{% else %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def chat_template(family: str | None = None) -> str:
    """The chat template a tiny ``family`` folder ships (bos-prefixed for Llama)."""
    return ("{{ bos_token }}" + CHAT_TEMPLATE) if family == "llama" else CHAT_TEMPLATE


# --------------------------------------------------------------------------- corpus

_ENGLISH = """\
The quick brown fox jumps over the lazy dog. A small model can learn a simple task when
the examples are clear and the answers are consistent. Water boils at one hundred degrees
Celsius at sea level, and it freezes at zero degrees. The sun rises in the east and sets in
the west. Plants need light, water and air to grow; animals need food, water and shelter.
People use tools to build houses, roads, bridges and machines. A teacher explains an idea,
and a student practices until the idea becomes easy. Most birds can fly, but penguins and
ostriches cannot. Fish live in water and breathe with gills. The heart pumps blood through
the body, and the lungs bring oxygen into the blood. Metals conduct heat and electricity
better than wood or plastic. When you drop a ball, gravity pulls it toward the ground.
The moon goes around the earth, and the earth goes around the sun once every year.
A day has twenty four hours, an hour has sixty minutes, and a minute has sixty seconds.
If it rains, the ground gets wet; if the ground is wet, it may have rained or someone may
have watered the garden. Children often play outside after school, while their parents
work in offices, shops, farms, hospitals and factories. Doctors treat patients, nurses
care for them, and scientists study diseases to find new medicines. A library holds many
books about history, science, art, music and mathematics. Some questions are easy, some
are hard, and some have more than one reasonable answer. Good reasoning checks each step,
compares the options, and rejects the choices that contradict the facts. Which one is
bigger, heavier, faster, older, younger, warmer or colder? Where would you find a pencil,
a spoon, a pillow, a wallet or a key? What do you call a person who writes stories?
Why does ice float on water? Because ice is less dense than liquid water. How many legs
does a spider have? A spider has eight legs, an insect has six legs, and a dog has four.
Electricity flows through a closed circuit. A magnet attracts iron and steel. Sound travels
faster in water than in air. Light travels faster than sound, so we see lightning before we
hear thunder. Evaporation turns liquid water into vapor; condensation turns vapor back into
drops. Seeds grow into plants, plants make flowers, and flowers make fruit with new seeds.
The patient had a fever, a cough and a headache, so the doctor ordered a test. The study
found that the treatment reduced the risk, but the evidence was not strong enough to be
sure. Yes, no, maybe. True or false. Agree, disagree, neither. It is possible that the
statement is true, but it is also possible that it is false. The premise supports the
hypothesis, contradicts it, or is neutral. She bought three apples and two oranges, then
gave one apple to her friend. He had twelve marbles and lost five of them. They walked
seven miles on Monday and nine miles on Tuesday. How many are left? How many in total?
What is the difference? What is the sum? Multiply, divide, add, subtract, equals, plus,
minus, times, half, double, twice, first, second, third, last, next, before, after.
Geography and history: Mountains, rivers, deserts, forests, oceans, islands, valleys and
volcanoes shape where people settle. Ancient cities grew beside fertile rivers because farmers
could irrigate wheat, barley and rice. Empires expanded through trade, conquest and marriage,
then declined when taxes, famine, drought or civil war weakened them. Sailors navigated by the
stars, merchants exchanged silk, spices, salt and silver, and travelers recorded strange customs
in their journals. The printing press spread knowledge quickly; newspapers, pamphlets and
encyclopedias followed. Railways, telegraphs, telephones, automobiles, airplanes, computers and
satellites connected distant continents. Governments write laws, courts interpret them, and
citizens vote in elections. A democracy protects freedom of speech, religion and assembly.
Biology and medicine: Cells contain a nucleus, membranes, proteins and genetic material called
DNA. Bacteria and viruses can cause infections; vaccines train the immune system to recognize
them. Antibiotics kill bacteria but do not work against viruses. Muscles contract, bones support
the skeleton, nerves carry signals, and the brain interprets vision, hearing, smell, taste and
touch. Hormones such as insulin regulate blood sugar. Diabetes, asthma, cancer, pneumonia,
influenza, malaria and tuberculosis are common diseases. Clinical trials compare a treatment
with a placebo; researchers measure outcomes, report significance, and discuss limitations.
Symptoms include pain, swelling, fatigue, nausea, dizziness, rash and shortness of breath.
Physics and chemistry: Energy is conserved; it changes form between kinetic, potential, thermal,
chemical, electrical and nuclear energy. Atoms combine into molecules; acids react with bases
to form salts and water. Oxygen supports combustion, carbon dioxide is released when fuels burn,
and photosynthesis converts sunlight, water and carbon dioxide into glucose. Friction slows
moving objects, pressure equals force divided by area, and temperature measures the average
motion of particles. Solids keep their shape, liquids take the shape of their container, gases
expand to fill it. Rainbows appear when sunlight is refracted inside raindrops.
Everyday life: On weekends families cook breakfast, clean the kitchen, wash laundry, visit
grandparents, repair bicycles, plant vegetables, walk the dog and watch movies. Customers pay
with cash or cards at the supermarket, bakery, pharmacy and restaurant. Umbrellas keep us dry,
blankets keep us warm, refrigerators keep food fresh, and alarm clocks wake us up. Furniture
includes chairs, tables, sofas, beds, shelves, desks and cabinets. Clothing includes shirts,
jackets, trousers, dresses, shoes, socks, gloves, scarves and hats. Vehicles include buses,
trucks, trains, boats, bicycles, motorcycles, helicopters and ambulances. Jobs include
carpenter, plumber, electrician, farmer, pilot, lawyer, engineer, journalist, musician, painter,
chef, firefighter, police officer, librarian, accountant, programmer and dentist.
Feelings and actions: Someone who is happy may smile, laugh or sing; someone who is sad may cry;
someone who is angry may shout; someone who is tired may yawn and sleep; someone who is hungry
will eat; someone who is curious will ask questions, read, explore and experiment. Friends share,
cooperate, apologize, forgive and celebrate together. Competitors practice, train, compete, win
or lose, and congratulate each other. A careful reader notices details, summarizes arguments,
identifies assumptions, evaluates evidence, and draws conclusions that follow logically.
Common words: about above across actually afraid again against almost alone along already also
although always among amount ancient angle animal another anything anywhere appear area argue
arrive article attention attack average avoid balance beautiful become begin behavior behind
believe belong beneath beside between beyond blanket border bottom branch bright bring broken
brother build burn business calculate capital careful carry catch cause center century certain
chance change chapter character charge cheap check choose circle citizen claim climate close
coast collect college color common company compare complete concern condition consider contain
continue control correct count country couple course cover create crowd culture current danger
decide deep defend degree depend describe design detail develop different direction discover
distance divide double during early earth effect effort either element energy enough entire
environment equal escape especially event every evidence exactly example except exercise expect
experience explain express extra factor family famous father feature field figure final finger
follow force foreign forget forward found frame free fresh front future garden general gentle
glass global government grand ground group guess guide habit handle happen hardly health heavy
height history hold hope huge human hundred hunt husband imagine important improve include
increase indeed industry inside instead interest island issue journey judge kitchen knowledge
language large later laugh layer leader learn least leave length letter level likely limit
listen little local lower machine major manage market master material matter measure member
memory method middle million minute mirror modern moment mother motion mountain movement music
narrow nation natural nearly necessary neighbor neither nervous network noise normal notice
number object obvious ocean offer office often opinion order origin other outside owner paper
parent particular partner pattern peace period permit person picture piece place planet please
pocket point popular position possible power practice prepare present pretty prevent price
private problem process produce product promise proper protect prove provide public purpose
quality quarter quick quiet rather reach ready real reason receive record reduce region relate
remain remember remove repeat replace report require result return rhythm river rough round
safety sample scale school science season section select sense series serve settle several shadow
shape share shelter short should shoulder signal silent similar simple since single sister
situation skill smooth society soldier solid solution source space special speed spirit spread
spring square stage standard station steady stomach straight strange stream street strength
strong structure student subject success sudden suggest summer supply support surface surprise
symbol system target teach team temperature thick thin thought thousand through throw together
tomorrow total toward trade travel trouble truth unless until usual valley value various village
visit voice volume weather weight western whether whole width window winter within without
wonder world worry writer yellow yesterday
"""

_PROMPT_VOCAB = """\
Question: Which of these is a mammal?
Answer Choices: (a) shark (b) whale (c) trout (d) eel (e) none of the above
Rationale: A whale breathes air and feeds its young with milk, so it is a mammal.
Answer: (b)
Q: Where do you keep milk cold? Answer Choices: (a) oven (b) refrigerator (c) drawer
A: Let's think step by step. Milk must stay cold, and a refrigerator keeps food cold.
Thus, the answer is (b).
Let's think step by step. Thus, the answer is (a). Thus, the answer is (c).
Thus, the answer is (d). Thus, the answer is (e). So the answer is yes. So the answer is no.
Verdict: correct. Verdict: wrong. Verdict: uncertain.
Is the rationale above correct, wrong, or uncertain? Evaluate the reasoning. Verdict:
predict: Question: ... Answer Choices: ... explain teacher: ... evaluate: ...
predict: explain llama: explain qwen: explain t5: explain flan: evaluate:
Context: Premise: Hypothesis: Options: Choices: Correct answer: The correct answer is
Answer: yes Answer: no Answer: maybe Answer: true Answer: false
entailment contradiction neutral. (a) (b) (c) (d) (e) (f) (A) (B) (C) (D) (E) a) b) c) d)
User: Assistant: System: You are a helpful assistant. Explain your reasoning.
"""


def _synthetic_lines(seed: int, n: int = 400) -> list[str]:
    """Seeded arithmetic and multiple-choice lines: digits, numbers and prompt scaffolding."""
    rng = random.Random(seed)
    nouns = ["apples", "books", "coins", "birds", "cars", "pens", "cups", "stones", "trees", "boxes"]
    names = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivan", "Jo"]
    letters = "abcde"
    lines = [" ".join(str(i) for i in range(101)), "0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 1/2 50%"]
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op, val = rng.choice([("plus", a + b), ("minus", a - b), ("times", a * b)])
        who, what = rng.choice(names), rng.choice(nouns)
        opts = rng.sample(range(-99, 999), 4) + [val]
        rng.shuffle(opts)
        choice = " ".join(f"({letters[i]}) {o}" for i, o in enumerate(opts))
        gold = letters[opts.index(val)]
        verdict = rng.choice(["correct", "wrong", "uncertain"])
        lines.append(
            f"Question: {who} has {a} {what}. What is {a} {op} {b}? Answer Choices: {choice}\n"
            f"Rationale: {a} {op} {b} equals {val}. Thus, the answer is ({gold}). Verdict: {verdict}"
        )
    return lines


def corpus(seed: int = 0) -> list[str]:
    """The tokenizer's training text: ~10 KB of English and prompt scaffolding, then 400
    seeded synthetic multiple-choice lines (numbers, options, verdicts) drawn from ``seed``."""
    return _ENGLISH.splitlines() + _PROMPT_VOCAB.splitlines() + _synthetic_lines(seed)


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def validate_params(
    family: str, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, seed: int
) -> int:
    """Check a tiny model's parameters; return its head_dim. Errors say how to fix them."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    _check_int("hidden_size", hidden_size, 1)
    _check_int("num_layers", num_layers, 1)
    _check_int("num_heads", num_heads, 1)
    _check_int("vocab_size", vocab_size, MIN_VOCAB)
    _check_int("seed", seed, 0)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}); "
            f"e.g. hidden_size={64 * num_heads} gives head_dim 64"
        )
    head_dim = hidden_size // num_heads
    if family in CAUSAL_FAMILIES and head_dim not in VLLM_CPU_HEAD_SIZES:
        ok_heads = [
            n
            for n in range(1, hidden_size + 1)
            if hidden_size % n == 0 and hidden_size // n in VLLM_CPU_HEAD_SIZES
        ]
        alt = f"num_heads in {ok_heads} for hidden_size {hidden_size}, or " if ok_heads else ""
        raise ValueError(
            f"head_dim = hidden_size / num_heads = {hidden_size}/{num_heads} = {head_dim} cannot be served by "
            f"vLLM: its CPU attention kernel only implements head sizes {list(VLLM_CPU_HEAD_SIZES)} "
            f"(at least 32; 64 recommended, e.g. hidden_size 128 with 2 heads). "
            f"Use {alt}hidden_size={64 * num_heads} for {num_heads} heads"
        )
    return head_dim


# --------------------------------------------------------------------------- tokenizer


#: Qwen2's pre-tokenizer split (digits one by one). Every family uses the same pipeline
#: because ``AutoTokenizer`` rebuilds a ``qwen2`` folder's tokenizer as ``Qwen2Tokenizer``
#: (NFC + this regex + byte-level) from vocab and merges, ignoring ``tokenizer.json``'s
#: pipeline: training with exactly that pipeline keeps the loaded tokenizer identical.
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def _train_tokenizer_object(vocab_size: int, seed: int):  # -> tokenizers.Tokenizer
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    # A few KB of text may run out of merges before vocab_size: fill the rest with
    # T5-style sentinels so len(tokenizer) == vocab_size == the model's embedding rows
    # (a random model may emit any id, and every id must decode).
    missing = vocab_size - tok.get_vocab_size(with_added_tokens=True)
    if missing > 0:
        tok.add_tokens([f"<extra_id_{i}>" for i in range(missing)])
    return tok


def build_tokenizer(
    out_dir: str | Path | None = None, *, vocab_size: int = 2000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the embedded corpus; save it to ``out_dir`` if given.

    Special tokens: ``<pad>`` 0, ``<s>`` 1 (bos), ``</s>`` 2 (eos), ``<unk>`` 3 (never
    produced: every byte has a symbol). No special token is added on encode;
    :func:`build_tiny_model` sets the family's convention (bos for Llama, eos for T5).
    Exactly ``vocab_size`` ids; same arguments give a byte-identical ``tokenizer.json``.
    """
    from transformers import PreTrainedTokenizerFast

    _check_int("vocab_size", vocab_size, MIN_VOCAB)
    _check_int("seed", seed, 0)
    tok = _train_tokenizer_object(vocab_size, seed)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    if len(hf) != vocab_size:  # pragma: no cover - guarded by the sentinel fill above
        raise RuntimeError(f"tokenizer has {len(hf)} ids, expected {vocab_size}")
    if out_dir is not None:
        _save_tokenizer(hf, Path(out_dir))
    return hf


def _save_tokenizer(hf: PreTrainedTokenizerFast, out: Path) -> None:
    """save_pretrained, naming the class every transformers version knows.

    transformers 5 writes ``TokenizersBackend``, which 4.x cannot resolve; both load
    ``PreTrainedTokenizerFast`` as the plain fast tokenizer from ``tokenizer.json``.
    """
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _set_family_post_processor(hf: PreTrainedTokenizerFast, family: str) -> None:
    """Mirror the real families: Llama prepends ``<s>``, T5 appends ``</s>``, Qwen2 adds nothing.

    The ``add_bos_token``/``add_eos_token`` flags are set first (transformers 5 rebuilds
    the post-processor from them), then the template is set explicitly, so the saved
    ``tokenizer.json`` carries it for every transformers version.
    """
    from tokenizers import processors

    bos_id, eos_id = hf.convert_tokens_to_ids(BOS), hf.convert_tokens_to_ids(EOS)
    hf.add_bos_token = family == "llama"
    hf.add_eos_token = family == "t5"
    if family == "llama":
        pp = processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
        )
    elif family == "t5":
        pp = processors.TemplateProcessing(
            single=f"$A:0 {EOS}:0", pair=f"$A:0 {EOS}:0 $B:1 {EOS}:1", special_tokens=[(EOS, eos_id)]
        )
    else:
        pp = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    hf.backend_tokenizer.post_processor = pp


# --------------------------------------------------------------------------- models


def _model_config(family: str, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int):
    head_dim = hidden_size // num_heads
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=0.02,
        **ids,
    )
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(head_dim=head_dim, attention_bias=False, mlp_bias=False, **common)
    if family == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(use_sliding_window=False, **common)
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=hidden_size,
        d_kv=head_dim,
        d_ff=2 * hidden_size,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        is_encoder_decoder=True,
        decoder_start_token_id=ids["pad_token_id"],  # T5 starts decoding from <pad>
        n_positions=MAX_POSITIONS,
        **ids,
    )


def build_tiny_model(
    family: Family,
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    vocab_size: int = 2000,
    seed: int = 0,
) -> Path:
    """Write a random ``family`` model + tokenizer + generation config into ``out_dir``.

    Weights are float32 safetensors drawn under ``torch.manual_seed(seed)`` (the caller's
    global RNG state is restored afterwards): same arguments give identical weights.
    Causal families use ``intermediate_size = 2 * hidden_size``, tied embeddings and
    ``max_position_embeddings = 2048``; T5 uses ``d_ff = 2 * hidden_size``,
    ``d_kv = hidden_size / num_heads`` and ``decoder_start_token_id = pad``.
    """
    validate_params(family, hidden_size, num_layers, num_heads, vocab_size, seed)
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(vocab_size=vocab_size, seed=0)
    _set_family_post_processor(tokenizer, family)
    tokenizer.chat_template = chat_template(family)

    config = _model_config(family, hidden_size, num_layers, num_heads, vocab_size)
    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=torch.float32)
    model.eval()

    gen = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
        **({"decoder_start_token_id": config.decoder_start_token_id} if family == "t5" else {}),
    )
    model.generation_config = gen
    with _quiet_progress():
        model.save_pretrained(str(out), safe_serialization=True)
    _save_tokenizer(tokenizer, out)
    gen.save_pretrained(str(out))

    params = _params(family, hidden_size, num_layers, num_heads, vocab_size, seed)
    marker = {
        "build_version": BUILD_VERSION,
        "params": params,
        "key": _params_key(params),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    for f in out.iterdir():  # safetensors are written 0600; a shared cache needs 0644
        if f.is_file():
            f.chmod(0o644)
    return out


@contextlib.contextmanager
def _quiet_progress():
    """No "Writing model shards" bar for a 2 MB file; the caller's setting is restored."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- cache


def _params(
    family: str, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, seed: int
) -> dict[str, Any]:
    return {
        "family": family,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "vocab_size": vocab_size,
        "seed": seed,
    }


def _params_key(params: dict[str, Any]) -> str:
    blob = json.dumps({"build_version": BUILD_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$TINYLLM_CACHE`` if set, else ``~/.cache/tinyllm_ray/tiny``."""
    env = os.environ.get("TINYLLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinyllm_ray" / "tiny"


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def tiny_model_path(cfg: TinyModelConfig, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the tiny model ``cfg`` describes, building it on first use.

    The folder is ``<cache>/<family>-h<hidden>-l<layers>-a<heads>-v<vocab>-s<seed>-<hash>``.
    A build goes to a private temporary folder beside it and is renamed into place
    atomically, so two processes racing on a cold cache both return a complete folder
    (the loser discards its copy).
    """
    params = _params(cfg.family, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.vocab_size, cfg.seed)
    validate_params(**params)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = (
        f"{cfg.family}-h{cfg.hidden_size}-l{cfg.num_layers}-a{cfg.num_heads}"
        f"-v{cfg.vocab_size}-s{cfg.seed}-{_params_key(params)}"
    )
    final = root / name
    if _is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_tiny_model(out_dir=tmp, **params)
        if final.exists() and not _is_complete(final):
            # Left by something other than this function (we only rename complete
            # folders): move it aside and delete it rather than trust it.
            stale = root / f".stale-{name}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(OSError):
                final.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, final)  # atomic; fails if another process renamed first
        except OSError:
            if not _is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- helpers


def is_seq2seq(path_or_config: Any) -> bool:
    """True for encoder-decoder models (T5 ...), False for decoder-only ones.

    Accepts a :class:`TinyModelConfig`, a ``transformers`` config, a config dict, a family
    name (``"t5"``, ``"llama"``, ``"qwen2"``) or a model folder / hub name (read offline
    from the local cache when ``HF_HUB_OFFLINE=1``).
    """
    obj = path_or_config
    family = getattr(obj, "family", None)
    if isinstance(family, str) and not hasattr(obj, "model_type"):
        return family == "t5"
    if isinstance(obj, dict):
        if "model_type" not in obj and isinstance(obj.get("family"), str):
            return obj["family"] == "t5"  # a TinyModelConfig dump
        return _seq2seq_from_fields(obj.get("model_type"), obj.get("is_encoder_decoder"))
    if hasattr(obj, "model_type"):
        return _seq2seq_from_fields(obj.model_type, getattr(obj, "is_encoder_decoder", None))
    if isinstance(obj, str) and obj in FAMILIES:
        return obj == "t5"
    if isinstance(obj, str | Path):
        p = Path(obj).expanduser()
        if p.is_dir():
            cfg_file = p / "config.json"
            if not cfg_file.is_file():
                raise FileNotFoundError(f"{p} has no config.json: not a Hugging Face model folder")
            data = json.loads(cfg_file.read_text())
            return _seq2seq_from_fields(data.get("model_type"), data.get("is_encoder_decoder"))
        from transformers import AutoConfig

        return is_seq2seq(AutoConfig.from_pretrained(str(obj)))
    raise TypeError(f"is_seq2seq: cannot tell from a {type(obj).__name__}")


def _seq2seq_from_fields(model_type: str | None, is_encoder_decoder: bool | None) -> bool:
    if is_encoder_decoder:
        return True
    if model_type:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

        return model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    return False


__all__ = [
    "CAUSAL_FAMILIES",
    "CHAT_TEMPLATE",
    "FAMILIES",
    "VLLM_CPU_HEAD_SIZES",
    "build_tiny_model",
    "build_tokenizer",
    "chat_template",
    "corpus",
    "default_cache_dir",
    "is_seq2seq",
    "tiny_model_path",
    "validate_params",
]
