"""The steering core on a tiny random GPT-2: what the hook adds, checked against forwards
computed by hand from the model's own weights."""

from __future__ import annotations

import pytest
import torch

from labeler.activations.steering import Intervention, Subject, constant_input_scale, steer, strength_for_kl
from labeler.core.errors import ConfigError, InputError

PROMPTS = ["I think that", "The answer is", "Here"]


def _block_input(subject: Subject, prompts: list[str], iv: Intervention | None) -> torch.Tensor:
    """The residual stream entering block 1 (= what leaves the hookpoint, block 0) in a full run."""
    seen = {}
    handle = subject.model.transformer.h[1].register_forward_pre_hook(
        lambda _m, args: seen.setdefault("x", args[0].detach().clone()))
    try:
        subject.next_token_logits(prompts, iv)
    finally:
        handle.remove()
    return seen["x"]


def _last_block_subject(subject: Subject) -> Subject:
    """The same model and SAE hooked at the last block's output, where the rest of the forward
    (final layer norm, unembedding) is simple enough to write by hand."""
    return Subject(subject.model, subject.tokenizer, subject.encoder, hook="transformer.h.1")


def _logits_by_hand(model, h: torch.Tensor) -> torch.Tensor:
    ln = model.transformer.ln_f
    mu = h.mean(-1, keepdim=True)
    var = ((h - mu) ** 2).mean(-1, keepdim=True)
    normed = (h - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias
    return normed @ model.lm_head.weight.T


def test_add_changes_the_logits_by_exactly_what_the_hook_adds(subject, steer_store):
    last = _last_block_subject(subject)
    feature, alpha = steer_store.planted, 3.5
    seen = {}
    handle = last.hooked.module.register_forward_hook(lambda _m, _a, o: seen.setdefault("h", o.detach().clone()))
    try:
        clean = last.next_token_logits(PROMPTS)
    finally:
        handle.remove()
    h = seen["h"][:, -1]
    by_hand = _logits_by_hand(last.model, h + alpha * subject.encoder.W_dec[feature])
    steered = last.next_token_logits(PROMPTS, Intervention(feature, "add", alpha))
    assert torch.allclose(steered, by_hand, atol=1e-4, rtol=1e-5)
    assert torch.allclose(clean, _logits_by_hand(last.model, h), atol=1e-4, rtol=1e-5)
    assert (steered - clean).abs().max() > 1.0  # the checks above are not vacuous


def test_left_padded_batches_give_each_prompt_its_own_logits(subject):
    batch = subject.next_token_logits(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([subject.prompt_ids(prompt)])
        with torch.inference_mode():
            alone = subject.model(input_ids=ids).logits[0, -1]
        assert torch.allclose(batch[i], alone, atol=1e-4)


def test_add_at_the_store_hookpoint_moves_the_residual_by_alpha_times_the_decoder_row(subject, steer_store):
    feature, alpha = steer_store.planted, -2.25
    clean = _block_input(subject, PROMPTS, None)
    steered = _block_input(subject, PROMPTS, Intervention(feature, "add", alpha))
    assert torch.allclose(steered - clean, (alpha * subject.encoder.W_dec[feature]).expand_as(clean), atol=1e-5)


def test_strength_zero_and_clamp_to_zero_where_inactive_equal_the_unsteered_run(subject, steer_store):
    clean = subject.next_token_logits(PROMPTS)
    assert torch.equal(subject.next_token_logits(PROMPTS, Intervention(steer_store.planted, "add", 0.0)), clean)
    # a feature that is 0 at every position of these prompts: clamping it to 0 changes nothing
    h = _block_input(subject, PROMPTS, None)
    acts = subject.encoder.encode(h.reshape(-1, h.shape[-1])).to_dense()
    silent = int(torch.nonzero(acts.abs().sum(0) == 0)[0])
    assert torch.equal(subject.next_token_logits(PROMPTS, Intervention(silent, "clamp", 0.0)), clean)
    assert not torch.equal(subject.next_token_logits(PROMPTS, Intervention(silent, "clamp", 4.0)), clean)


def test_clamp_is_encode_set_decode_plus_the_error_term(subject):
    h = _block_input(subject, PROMPTS, None)
    flat = h.reshape(-1, h.shape[-1])
    acts = subject.encoder.encode(flat).to_dense()
    feature = int(acts.gt(0).sum(0).argmax())  # fires somewhere in these prompts, not everywhere
    assert 0 < int(acts[:, feature].gt(0).sum()) < flat.shape[0]
    value = 1.5
    enc = subject.encoder
    decode = lambda f: f @ enc.W_dec + enc.b_dec  # noqa: E731  (SAELens: b_dec added back on decode)
    clamped = acts.clone()
    clamped[:, feature] = value
    by_hand = decode(clamped) + (flat - decode(acts))
    steered = _block_input(subject, PROMPTS, Intervention(feature, "clamp", value))
    assert torch.allclose(steered.reshape(-1, h.shape[-1]), by_hand, atol=1e-4)
    untouched = acts[:, feature] == value  # none here; every token moved by (value - f) W_dec
    assert not untouched.any() and (steered - h).abs().max() > 0.1


def test_input_side_hook_steers_like_the_previous_modules_output(subject, steer_store):
    at_input = Subject(subject.model, subject.tokenizer, subject.encoder, hook="transformer.h.1", hook_io="input")
    iv = Intervention(steer_store.planted, "add", 1.75)
    assert torch.allclose(at_input.next_token_logits(PROMPTS, iv), subject.next_token_logits(PROMPTS, iv), atol=1e-5)


def test_the_hook_is_gone_after_every_steered_call(subject, steer_store):
    clean = subject.next_token_logits(PROMPTS)
    steer(subject, "I think that", Intervention(steer_store.planted, "add", 50.0), max_new_tokens=4)
    with pytest.raises(RuntimeError):
        with subject.lock, subject.intervening(Intervention(steer_store.planted, "add", 50.0)):
            raise RuntimeError("boom")
    assert torch.equal(subject.next_token_logits(PROMPTS), clean)
    assert not subject.hooked.module._forward_hooks and not subject.hooked.module._forward_pre_hooks


def test_generation_is_seeded_and_steering_shows_in_the_text(subject, steer_store):
    iv = Intervention(steer_store.planted, "add", 10.0)
    a = steer(subject, "I think that", iv, max_new_tokens=8, samples=3, temperature=1.0, seed=7)
    b = steer(subject, "I think that", iv, max_new_tokens=8, samples=3, temperature=1.0, seed=7)
    assert a.steered == b.steered and a.unsteered == b.unsteered
    assert len(a.steered) == len(a.unsteered) == 3
    assert steer(subject, "I think that", iv, max_new_tokens=8, samples=3, temperature=1.0, seed=8).unsteered != a.unsteered
    greedy = steer(subject, "I think that", iv, max_new_tokens=8, temperature=0.0)
    assert steer_store.word in greedy.steered[0] and steer_store.word not in greedy.unsteered[0]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    steer(subject, "The", iv, max_new_tokens=4, temperature=1.0, seed=1)
    assert torch.equal(torch.rand(1), before)  # the caller's random state is untouched


def test_strength_search_reaches_the_kl_target(subject, steer_store):
    found = strength_for_kl(subject, PROMPTS, steer_store.planted, 1.5, start=0.01)
    assert found.reached and found.kl == pytest.approx(1.5, rel=0.05)
    again = subject.next_token_kl(PROMPTS, Intervention(steer_store.planted, "add", found.strength))
    assert again == pytest.approx(found.kl, rel=1e-4)
    assert [s for s, _ in found.trace][:2] == [0.01, 0.02]  # doubling, then bisection
    with pytest.raises(ConfigError, match="KL target"):
        strength_for_kl(subject, PROMPTS, steer_store.planted, 0.0)


def test_normalised_sae_inputs_map_back_per_token(subject, steer_store):
    """An SAE that rescales each input to norm sqrt(d) decodes in that space: the change at the
    hookpoint is the decoder row times ||h|| / sqrt(d)."""
    from dataclasses import replace

    enc = replace(subject.encoder, normalize="constant_norm_rescale")
    assert constant_input_scale(enc) is None and constant_input_scale(subject.encoder) == 1.0
    normed = Subject(subject.model, subject.tokenizer, enc, hook="transformer.h.0")
    h = torch.randn(5, enc.d_in) * torch.arange(1, 6)[:, None]
    delta = normed.delta(h, Intervention(steer_store.planted, "add", 2.0))
    expected = 2.0 * enc.W_dec[steer_store.planted][None, :] * h.norm(dim=-1, keepdim=True) / enc.d_in ** 0.5
    assert torch.allclose(delta, expected, rtol=1e-4, atol=1e-6)


def test_decoder_rows_of_rescaled_saes_and_of_neuron_sides(subject, steer_store):
    """SAELens' rescale_acts_by_decoder_norm decodes with unit rows; a neuron's sides decode as
    x = pos - neg, so clamping one side keeps the other."""
    from dataclasses import replace

    from labeler.activations.formats import neurons

    f = steer_store.planted
    wide = replace(subject.encoder, W_dec=subject.encoder.W_dec * 3.0, rescale_by_decoder_norm=True)
    rescaled = Subject(subject.model, subject.tokenizer, wide, hook="transformer.h.0")
    h = torch.randn(4, wide.d_in)
    assert torch.allclose(rescaled.delta(h, Intervention(f, "add", 2.0)),
                          (2.0 * subject.encoder.W_dec[f] / subject.encoder.W_dec[f].norm()).expand_as(h), atol=1e-6)
    d = subject.encoder.d_in
    sides = Subject(subject.model, subject.tokenizer, neurons(d, ("pos", "neg")), hook="transformer.h.0")
    h = torch.tensor([[1.5] * d, [-2.0] * d])
    pos = h + sides.delta(h, Intervention(3, "clamp", 4.0))
    neg = h + sides.delta(h, Intervention(d + 3, "clamp", 4.0))
    assert pos[:, 3].tolist() == [4.0, 2.0] and neg[:, 3].tolist() == [-2.5, -4.0]  # x = pos - neg
    assert torch.equal(pos[:, :3], h[:, :3]) and torch.equal(neg[:, 4:], h[:, 4:])
    plain = Subject(subject.model, subject.tokenizer, neurons(d), hook="transformer.h.0")
    manifest = {"model": {"hook": "transformer.h.0", "d_model": d}, "sae": {"name": "neurons:pos,neg", "path": "neurons"}}
    assert Subject.from_manifest(manifest, subject.model, subject.tokenizer).encoder.n_features == 2 * d
    assert (h + plain.delta(h, Intervention(3, "clamp", 0.5)))[:, 3].tolist() == [0.5, 0.5]


def test_activations_on_text_match_the_store(subject, steer_store):
    """A stored window's text, read back through the box, gives the activations collect stored
    (a window is a sequence of its own; only texts that retokenize to the same ids compare)."""
    from labeler.examples.store import FeatureStore

    store = FeatureStore(steer_store.path)
    checked = 0
    for feature in range(store.n_features):
        for ex in store.feature(feature).select("train", "top")[:3]:
            if subject.prompt_ids(ex.text) != ex.token_ids:
                continue
            tokens, values = subject.activations(ex.text, feature)
            assert tokens == ex.tokens
            assert values == pytest.approx(ex.activations, abs=2e-3)
            checked += 1
    assert checked >= 10


def test_bad_input_is_refused_with_a_reason(subject, encoder_store):
    from labeler.core.config import Settings
    from labeler.examples.store import FeatureStore
    from labeler.runs.subjects import SubjectCache

    with pytest.raises(InputError, match="out of range"):
        subject.next_token_logits(PROMPTS, Intervention(10_000, "add", 1.0))
    with pytest.raises(InputError, match="mode"):
        Intervention(1, "scale", 1.0)
    with pytest.raises(InputError, match="finite"):
        Intervention(1, "add", float("nan"))
    with pytest.raises(InputError, match="empty"):
        subject.generate([""], None, max_new_tokens=2)
    with pytest.raises(InputError, match="tokens long"):
        subject.generate(["word " * 600], None, max_new_tokens=2)
    with pytest.raises(InputError, match="max_new_tokens"):
        subject.generate(["The"], None, max_new_tokens=0)
    from dataclasses import replace

    transcoder = Subject(subject.model, subject.tokenizer, replace(subject.encoder, architecture="transcoder"),
                         hook="transformer.h.0")
    with pytest.raises(ConfigError, match="transcoder"):
        transcoder.next_token_logits(PROMPTS, Intervention(1, "add", 1.0))
    bert = SubjectCache(Settings(device="cpu")).get(FeatureStore(encoder_store))
    with pytest.raises(InputError, match="encoder"):
        steer(bert, "I think that", Intervention(0, "add", 1.0))
    tokens, values = bert.activations("the cat sat on the mat", 0)  # reading works for any model
    assert tokens and len(tokens) == len(values)
