"""Mitigations: the remedies for collapse as entries that are the same on every track.

A mitigation is a data policy (which samples train the next model), a trainer option (the loss)
or a generator option (decoding). ``--mitigation NAME[:VALUE]`` applies one, ``+`` joins several
(``mix:0.1+tce:0.9``), and a sweep's ``mitigation`` axis crosses them with models. This module
translates a mitigation into the spec (a policy, or a parameter override), says where one does not
apply (and why), and gives the label a run is ranked under in the suite table.

A mitigation's label is stable across tracks: ``best-of:4,m0`` on gmm and on opt125m is one row
of the suite table. A run made with plain options gets the same label (``--set tce=0.9`` is
``tce:0.9``), since the label is read from the spec, not from how the options were spelt.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from bench.components import Mitigation, ModelBundle
from bench.errors import BenchError
from bench.plugins import Bench, suggest
from bench.types import parse_scalar


def split(text: str | Iterable[str]) -> list[tuple[str, str | None]]:
    """``"mix:0.1+tce:0.9"`` (or a list of such) -> [("mix", "0.1"), ("tce", "0.9")]."""
    parts = [text] if isinstance(text, str) else list(text)
    out: list[tuple[str, str | None]] = []
    for part in parts:
        if not isinstance(part, str):
            raise BenchError(f"a mitigation is written NAME or NAME:VALUE, got {part!r}")
        for item in part.split("+"):
            item = item.strip()
            if not item:
                raise BenchError(f"empty mitigation in {part!r}; join several with '+', e.g. mix:0.1+tce:0.9")
            name, sep, value = item.partition(":")
            out.append((name.strip(), value.strip() if sep else None))
    return out


def lookup(b: Bench, name: str) -> Mitigation:
    """The registered mitigation ``name``, or a policy registered without a Mitigation entry."""
    if name in b.mitigations:
        return b.mitigations.get(name)
    if name in b.policies:
        pol = b.policies.get(name)
        return Mitigation(name=name, kind="policy", citation=pol.citation, description=pol.description,
                          kinds=pol.kinds, needs=pol.needs)
    known = sorted(set(b.mitigations.names()) | set(b.policies.names()))
    raise BenchError(f"unknown mitigation {name!r}.{suggest(name, known)} Known mitigations: {', '.join(known)}. "
                     "`bench plugins` lists them.")


def _needs_reason(needs: Iterable[str], features: frozenset[str], what: str) -> str | None:
    missing = [n for n in needs if n not in features]
    if missing:
        return f"{what} needs {', '.join(missing)}, which this model's data source does not offer"
    return None


def policy_unavailable(b: Bench, bundle: ModelBundle, params: Mapping[str, Any], policy: str,
                       policy_params: Mapping[str, Any]) -> str | None:
    """Why policy ``policy`` (with its params, including any verifier) cannot run on ``bundle``,
    or None when it can."""
    pol = b.policies.get(policy)
    if bundle.kind not in pol.kinds:
        return f"it handles {', '.join(pol.kinds)} samples and this model makes {bundle.kind}"
    features = bundle.features(params)
    reason = _needs_reason(pol.needs, features, f"policy {policy!r}")
    if reason:
        return reason
    verifier = policy_params.get("verifier") if "verifier" in pol.params else None
    if verifier is not None:
        if verifier not in b.verifiers:
            known = b.verifiers.names()
            return (f"unknown verifier {verifier!r}.{suggest(str(verifier), known)} "
                    f"Known verifiers: {', '.join(known) or 'none'}")
        ver = b.verifiers.get(verifier)
        if bundle.kind not in ver.kinds:
            return f"verifier {verifier!r} handles {', '.join(ver.kinds)} samples and this model makes {bundle.kind}"
        reason = _needs_reason(ver.needs, features, f"verifier {verifier!r}")
        if reason:
            return reason
    return None


def _component_params(b: Bench, bundle: ModelBundle, kind: str) -> dict[str, Any]:
    comp = (b.trainers if kind == "trainer" else b.generators).get(bundle.trainer if kind == "trainer" else bundle.generator)
    return {**dict(comp.params), **dict(getattr(comp, "options", {}) or {}),
            **{k: v for k, v in bundle.params.items()}}


def unavailable(b: Bench, plugin: str, text: str | Iterable[str], preset: str | None = None) -> str | None:
    """Why mitigation ``text`` does not apply to model ``plugin`` (at ``preset``), or None.
    Never raises for a mitigation that exists; unknown names raise BenchError."""
    bundle = b.models.get(plugin)
    preset = preset or bundle.default_preset
    params = {**_component_params(b, bundle, "trainer"), **_component_params(b, bundle, "generator"),
              **{k: v for k, v in (bundle.presets.get(preset) or {}).items()}}
    for name, value in split(text):
        m = lookup(b, name)
        label = name if value is None else f"{name}:{value}"
        if bundle.kind not in m.kinds:
            return f"{label} handles {', '.join(m.kinds)} samples and {plugin} makes {bundle.kind}"
        reason = _needs_reason(m.needs, bundle.features(params), label)
        if reason:
            return reason
        if m.kind == "policy":
            pol = b.policies.get(name)
            pparams = dict(pol.params)
            if value is not None and pol.positional is not None:
                names = (pol.positional,) if isinstance(pol.positional, str) else tuple(pol.positional)
                for pname, v in zip(names, value.split(",") if len(names) > 1 else [value]):
                    pparams[pname] = v.strip()
            reason = policy_unavailable(b, bundle, params, name, pparams)
            if reason:
                return reason
        else:
            if m.param not in _component_params(b, bundle, m.kind):
                comp = bundle.trainer if m.kind == "trainer" else bundle.generator
                return f"{label} is a {m.kind} option ({m.param}) that {m.kind} {comp!r} of {plugin} does not have"
        if m.applies is not None:
            reason = m.applies(bundle, params)
            if reason:
                return reason
    return None


def translate(b: Bench, plugin: str, text: str | Iterable[str], policy: str | None) -> tuple[str | None, dict[str, Any]]:
    """The policy and the parameter overrides that mitigation ``text`` stands for; BenchError when
    it does not apply (with the reason) or when it contradicts ``policy``."""
    reason = unavailable(b, plugin, text)
    label = text if isinstance(text, str) else "+".join(text)
    if reason:
        raise BenchError(f"mitigation {label!r} does not apply to model {plugin!r}: {reason}")
    overrides: dict[str, Any] = {}
    chosen = None
    for name, value in split(text):
        m = lookup(b, name)
        if m.kind == "policy":
            if chosen is not None:
                raise BenchError(f"mitigation {label!r} names two policies ({chosen} and {name}); keep one")
            chosen = name if value is None else f"{name}:{value}"
        else:
            if value is None:
                raise BenchError(f"mitigation {name!r} needs a value: {m.example or name + ':VALUE'}")

            overrides[m.param] = parse_scalar(value)
    if chosen is not None and policy is not None and policy != chosen:
        raise BenchError(f"--policy {policy} and --mitigation {label} both choose the policy; give one")
    return chosen or policy, overrides


def label(b: Bench, spec) -> str:
    """The label a run is ranked under in the suite table: its policy label, then each trainer or
    generator mitigation whose parameter differs from the preset's value, joined with ``+``
    (``replace`` is left out when options follow: ``tce:0.9``, ``mix:0.1+tce:0.9``)."""
    bundle = b.models.get(spec.plugin)
    preset = dict(bundle.presets.get(spec.preset) or {})
    parts = []
    for m in sorted((b.registries["mitigations"].get(n) for n in b.mitigations.names()), key=lambda m: m.name):
        if m.kind == "policy" or m.param is None:
            continue
        try:
            base_params = _component_params(b, bundle, m.kind)
        except BenchError:
            continue
        if m.param not in base_params and m.param not in spec.params:
            continue
        base = preset.get(m.param, base_params.get(m.param, m.neutral))
        value = spec.params.get(m.param, base_params.get(m.param, m.neutral))
        if value != base:
            parts.append(f"{m.name}:{value}")
    policy = spec.policy_label
    if parts and policy == "replace":
        return "+".join(parts)
    return "+".join([policy, *parts])


def table(b: Bench, plugins: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every mitigation with its kind, citation and, per model, "applies" or the reason it does
    not (for ``bench plugins`` and the docs)."""
    names = sorted(set(b.mitigations.names()) | set(b.policies.names()))
    plugins = list(plugins) if plugins is not None else b.models.names()
    rows = []
    for name in names:
        m = lookup(b, name)
        where = {}
        for plugin in plugins:
            try:
                example = m.example or name
                where[plugin] = unavailable(b, plugin, example) or "applies"
            except BenchError as exc:
                where[plugin] = str(exc)
        rows.append({"name": name, "kind": m.kind, "param": m.param, "citation": m.citation,
                     "description": m.description, "where": where})
    return rows
