"""Rendered tables of the bench programs that measure the software (docs/performance.md; see pipeline.report.docs).

Each table is made from a ``bench/results/*.json`` its program wrote, and says under it which command, commit
and data made it. Speed tables claim nothing about the corpus (they time the machine, and say which one); the
cache size table claims today's cache format, since its bytes are that format's.
"""

from __future__ import annotations

from pipeline.report.docs import CURRENT, DocTable, markdown_table
from pipeline.report.pool_labels import LABEL_HEAD, label_rows
from pipeline.report.tables_results import with_source

RESULTS = "bench/results"


def encoder_memo(result: dict) -> list[str]:
    """Seconds per utterance of encoding, decoding and reading a kept encoder output."""
    rows = [[what, f"{seconds:.3f}"] for what, seconds in result["seconds_per_utterance"].items()]
    same = "yes" if result["batch_invariant_encoder"] else "no"
    return markdown_table(["what", "s per utterance"], rows) + [
        "",
        f"The transformers encoder's output for an utterance is bitwise the same alone and in a batch: {same}.",
    ]


def rtfx_engines(result: dict) -> list[str]:
    """Each engine's decoding speed, one utterance at a time and in batches, against transformers float32."""
    rows = [
        [
            name,
            f"{r['seconds_per_utterance']:.3f}",
            r["rtfx"],
            f"{r['ratio_to_transformers_float32']:.2f} ({', '.join(f'{x:.2f}' for x in r['ratios'])})",
        ]
        for name, r in result["engines"].items()
    ]
    head = ["engine", "s per utterance", "RTFx", "x transformers float32 (per round)"]
    return markdown_table(head, rows) + [
        "",
        f"{result['utterances']} test utterances, {result['audio_seconds']} s of audio; medians of "
        f"{result['repeats']} rounds, each timing every engine once; ratios taken within a round.",
    ]


def rtfx_encoder(result: dict) -> list[str]:
    """How much of a one-at-a-time decode the encoder is (it always runs on a 30-second window)."""
    whole = {name.lower(): r["seconds_per_utterance"] for name, r in result["engines"].items()}
    rows = [
        [name, f"{seconds:.3f}", f"{whole[name]:.3f}", f"{100 * seconds / whole[name]:.0f} %"]
        for name, seconds in result["encoder_seconds_per_utterance"].items()
        if name in whole
    ]
    return markdown_table(["engine", "encoder s per utterance", "whole decode s", "encoder share"], rows)


COMPUTE = ("float32", "int8_float32", "int8")


def rtfx_settings(result: dict) -> list[str]:
    """CTranslate2's CPU settings, one utterance at a time: seconds per utterance (ratio to the default on every
    core) and whether any of the setting's decodes (threads, batch) changed a token id."""
    rows = result["ct2_settings"]
    at = {(r["setting"], r["threads"], r["batch"], r["compute_type"]): r for r in rows}
    most = max(r["threads"] for r in rows)
    default = {c: at[("default", most, 1, c)]["seconds_per_utterance"] for c in COMPUTE}
    lines = [("default", 1)] + [(s, most) for s in dict.fromkeys(r["setting"] for r in rows) if s != "default"]
    table = [[f"default, {most} threads", *(f"{default[c]:.3f}" for c in COMPUTE), "-"]]
    for setting, threads in lines:
        cells = {c: at.get((setting, threads, 1, c)) for c in COMPUTE}
        shown = [
            "-" if r is None else f"{r['seconds_per_utterance']:.3f} ({r['seconds_per_utterance'] / default[c]:.2f})"
            for c, r in cells.items()
        ]
        changed = sorted({r["compute_type"] for r in rows if r["setting"] == setting and not r["same_ids"]})
        same = "changed: " + ", ".join(changed) if changed else "yes"
        table.append([f"{setting}, {threads} thread{'s' if threads > 1 else ''}", *shown, same])
    return markdown_table(["setting", *COMPUTE, "ids as the default"], table, "lrrrl") + [
        "",
        f"The pipeline picks: {result['ct2_choice']['reason']}.",
    ]


def gpu_paths(result: dict) -> list[str]:
    """The CUDA paths of cache_teacher and train_student with random models of the paper's sizes."""
    rows = []
    agree = result.get("cache_agreement", {})
    if "top1_agreement" in agree:
        verify = (
            "both verify" if not any(agree["verify_problems"].values()) else f"problems: {agree['verify_problems']}"
        )
        rows.append(
            [
                f"cache, base-sized teacher, CUDA vs CPU float32, {agree['label_positions']} label positions",
                f"top-1 agreement {agree['top1_agreement']:.3f}; {verify}",
            ]
        )
    speed = result.get("cache_throughput", {})
    if "label_tokens_per_second" in speed:
        rows.append(
            [
                f"cache, large-v2-sized teacher, batch {speed['batch_size']}",
                f"{speed['label_tokens_per_second']:.0f} label tokens/s, {speed['utterances_per_second']:.1f} utterances/s "
                f"(model load included), peak {speed['peak_gpu_mb'] / 1000:.1f} GB",
            ]
        )
    step = result.get("train_step", {}).get("steps")
    if step:
        online = step["distilwhisper_teacher_online"]
        rows.append(
            [
                f"step, small-sized student, CLSR on every layer, batch {result['train_step']['batch_size']}",
                f"KD from the cache {step['distilwhisper_from_cache']['seconds']:.3f} s, no KD "
                f"{step['same_step_without_kd']['seconds']:.3f} s, large-v2 teacher online {online['seconds']:.3f} s "
                f"({online['ratio_to_no_kd']:.1f}x no KD)",
            ]
        )
    train = result.get("train_student", {})
    if "seconds" in train:
        rows.append(
            [
                f"`train_student`, {train['steps']} steps and {len(train['dev_history'])} dev evaluations",
                f"{train['seconds']:.1f} s; the student ({train['reloaded_parameters'] / 1e6:.0f} M parameters) loads back",
            ]
        )
    return markdown_table(["what", result["gpu"]], rows, "ll")


PICKS = [  # (k, min_prob, mass, encoding): the rows that show the choice of the default
    (16, 0.0, 0.0, "plain"),
    (16, 0.0, 0.0, "raw/float16"),
    (17, 0.0, 0.0, "rank/q8"),
    (16, 0.0, 0.0, "delta/sqrt64"),
    (24, 0.0015, 0.0, "delta/sqrt64"),
    (24, 0.0012, 0.0, "delta/sqrt64"),
    (24, 0.0012, 0.0, "rank/q8"),
    (24, 0.0012, 0.0, "raw/float16"),
    (24, 0.0, 0.98, "delta/sqrt64"),
]


def _kept(row: dict) -> str:
    if row["min_prob"]:
        return f"p >= {row['min_prob']:g} (at most {row['k']})"
    if row["mass"]:
        return f"mass >= {row['mass']:g} (at most {row['k']})"
    return f"top-{row['k']}"


def cache_size(result: dict) -> list[str]:
    """Size and fidelity of the teacher cache's encodings: bytes per label token against Jensen-Shannon divergence
    to the teacher's full distribution; the smallest row at least as close as top-16 float16 in bold."""
    by = {(r["k"], r["min_prob"], r["mass"], r["encoding"]): r for r in result["rows"]}
    best = result["smallest_at_the_bar"]
    rows = []
    for pick in PICKS:
        r = by.get(pick)
        if r is None:
            continue
        bold = "**" if pick == (best["k"], best["min_prob"], best["mass"], best["encoding"]) else ""
        rows.append(
            [
                f"{bold}{_kept(r)}{bold}",
                f"{bold}{r['encoding']}{bold}",
                f"{bold}{r['bytes_per_token']:.1f}{bold}",
                f"{r['entries']:.1f}",
                f"{r['js_renorm']:.5f}",
                f"{r['js_ghost']:.5f}",
                "yes" if r["at_least_top16_float16"] else "no",
            ]
        )
    head = ["entries kept", "encoding", "bytes/token", "entries", "JS renorm", "JS ghost", "as close as top-16 float16"]
    return markdown_table(head, rows, "llrrrrl") + [
        "",
        f"{result['utterances']} dev utterances, {result['label_tokens']} label tokens; bytes include cache.json and "
        f"the card. The whole folder built at the defaults: {result['default_build_bytes_per_token']} bytes per label "
        "token.",
    ]


def cache_speed(result: dict) -> list[str]:
    """Building the cache against a bare teacher forward loop, and reading it back."""
    rows = [
        ["cache_teacher build", f"{result['build_seconds']:.1f} s"],
        ["bare forward loop (features, teacher forward, log-softmax)", f"{result['bare_forward_seconds']:.1f} s"],
        ["build / bare loop", f"{result['build_overhead']:.2f}"],
        ["read into training tensors, 1 thread", f"{result['read_positions_per_second_1_thread']:,} label positions/s"],
    ]
    return markdown_table(["what", "measured"], rows)


def train_step(result: dict) -> list[str]:
    """A distillation step from the cache against the same step without KD and with the teacher run online."""
    rows = [
        [name.replace("_", " "), f"{s['seconds']:.3f}", f"{s['ratio_to_no_kd']:.2f}", f"{s['peak_rss_mb']:.0f}"]
        for name, s in result["steps"].items()
    ]
    return markdown_table(["step", "s per step", "x no KD", "peak RSS MB"], rows) + [
        "",
        f"Batch of {result['batch_size']} utterances, {result['label_tokens']} label tokens.",
    ]


def variant_parts(result: dict) -> list[str]:
    """One optimizer step per mode, its frozen cross-attention K/V part, and what a variant's training costs."""
    every = result["dev_decodes"]
    rows = []
    for name, m in result["modes"].items():
        kv = "trained" if m["cross_kv_s"] is None else f"{m['cross_kv_s']:.2f} ({m['cross_kv_share']:.0%})"
        rows.append(
            [
                name,
                f"{m['step_s']:.2f}",
                kv,
                f"{m['train_s_default']:.0f}",
                f"{m['train_s_eval_every_8']:.0f}",
                f"{m['kv_once_per_utterance_saves_s']:.0f}",
            ]
        )
    int8 = result["ctranslate2_int8_encoder"]
    return markdown_table(
        [
            "mode",
            "s per step",
            "cross K/V s (share)",
            f"training s ({every['default']} dev decodes)",
            f"training s ({every['eval_every_8']}: eval_every 8)",
            "K/V once an utterance saves s",
        ],
        rows,
    ) + [
        "",
        f"{result['steps_per_run']} steps a run; one dev decode ({result['dev_utterances']} utterances, untrained "
        f"student): {result['dev_decode_s']:.1f} s. CTranslate2 int8 encoder: {int8['encode_s']:.2f} s an utterance;"
        f" reading its kept output from the encoder memo: {int8['memo_read_s'] * 1000:.1f} ms.",
    ]


def assist(result: dict) -> list[str]:
    """The teacher decoding alone and with the student drafting for it: same ids or not, seconds, decoder passes."""
    langs = result["languages"]
    rows = [
        [
            lang,
            f"{r['identical']} of {r['utterances']}",
            f"{r['plain_seconds']:.1f}",
            f"{r['assisted_seconds']:.1f}",
            f"{r['speed_ratio']:.2f}",
            f"{r['plain_passes']} / {r['teacher_passes']}",
            f"{r['accepted']} of {r['drafted']} ({r['acceptance']:.0%})",
        ]
        for lang, r in langs.items()
    ]
    head = ["language", "same ids", "plain s", "assisted s", "plain s / assisted s", "teacher passes plain / assisted"]
    total = {
        k: sum(r[k] for r in langs.values()) for k in ("utterances", "identical", "plain_seconds", "assisted_seconds")
    }
    first = next(iter(langs.values()))
    weights, draft, load = first["decoder_weights"], first["draft"], result["load_average"]
    return markdown_table([*head, "drafts kept"], rows) + [
        "",
        f"All {total['utterances']} utterances: {total['identical']} with the teacher's plain greedy ids; "
        f"{total['plain_seconds']:.1f} s plain against {total['assisted_seconds']:.1f} s assisted, a ratio of "
        f"{total['plain_seconds'] / total['assisted_seconds']:.2f}. A decoder pass of the assistant multiplies "
        f"{weights['assistant'] / 1e6:.1f} M weights per token, the teacher's {weights['teacher'] / 1e6:.1f} M "
        f"({weights['assistant'] / weights['teacher']:.0%}). Greedy, at most {first['max_new_tokens']} new tokens; "
        f"drafts of at most {draft['num_assistant_tokens']} tokens ({draft['num_assistant_tokens_schedule']}), cut "
        f"where the assistant's probability falls under {draft['assistant_confidence_threshold']}; "
        f"{result['torch_threads']} torch threads; load average {load['before'][0]} before, {load['after'][0]} after.",
    ]


def teacher_labels(result: dict) -> list[str]:
    """The teacher's labels of dev speech: the pass's cost against a reference pass, and their error rate before
    and after the filters a student applies."""
    rows, head = label_rows(result["languages"]), LABEL_HEAD
    f, load = result["filters"], result["load_average"]
    return markdown_table(head, rows) + [
        "",
        f"Labelling pass (greedy decode, at most {result['label_max_new_tokens']} tokens, then teacher-forced along "
        f"the transcript): {result['labelling_s_per_utt']:.2f} s an utterance; the reference pass "
        f"(teacher-forced on the real text): {result['reference_s_per_utt']:.2f} s, a ratio of "
        f"{result['labelling_s_per_utt'] / result['reference_s_per_utt']:.2f}. Filters: compression ratio above "
        f"{f['max_compression_ratio']}, average log-probability below {f['min_avg_logprob']}, no-speech "
        f"probability above {f['max_no_speech_prob']}, the token cap, empty. {result['torch_threads']} torch threads; "
        f"load average {load['before'][0]} before, {load['after'][0]} after.",
    ]


SCALE_STEPS = {
    "prepare_local": "prepare_data, local manifest",
    "prepare_hf": "prepare_data, hub export",
    "cache": "cache_teacher, tiny teacher",
    "train_load:none": "training's data, no features",
    "train_load:mel": "training's data, log-mels",
    "train_load:encoder": "training's data, encoder outputs",
}


def scale(result: dict) -> list[str]:
    """Wall time and peak memory of each step as the corpus grows, with the fit projected to 224k utterances."""

    def kind(r: dict) -> str:
        return r["step"] + (f":{r['features']}" if "features" in r else "")

    rows = []
    for r in result["rows"]:
        held = r.get("out_bytes", r.get("feature_store_bytes", 0)) / 2**20
        rows.append(
            [
                SCALE_STEPS.get(kind(r), kind(r)),
                f"{r['utterances']:,}",
                f"{r['seconds']:.1f}",
                f"{r['utt_per_s']:.0f}",
                f"{r['peak_rss_mib']:.0f}",
                f"{r['anon_peak_mib']:.0f}",
                f"{held:,.0f}",
                " / ".join(f"{x:.1f}" for x in r["load_average"]),
            ]
        )
    head = ["step", "utterances", "s", "utt/s", "peak RSS MiB", "heap MiB", "written (held) MiB", "load before / after"]
    lines = markdown_table(head, rows) + [""]
    for name, fit in result["summary"].items():
        label = SCALE_STEPS.get(name, name)
        if "slope_ms_per_utt" not in fit:
            lines.append(f"- {label}: measured at {fit['sizes'][0]:,} only, {fit['ms_per_utt']} ms an utterance.")
            continue
        peak = max(r["peak_rss_mib"] for r in result["rows"] if kind(r) == name) / 1024
        memory = (
            f"{fit['projected_rss_gib']} GiB"
            if fit["rss_mib_per_10k"] > 0
            else f"no growth measured (largest peak {peak:.2f} GiB)"
        )
        lines.append(
            f"- {label}: {fit['slope_ms_per_utt']} ms an added utterance; utterances/s at the largest size "
            f"{fit['throughput_ratio']}x that at the smallest; peak RSS {fit['rss_mib_per_10k']:+} MiB and heap "
            f"{fit['anon_mib_per_10k']:+} MiB per 10k; projected to 224,000: {fit['projected_hours']} h, {memory}."
        )
    decoded = [r for r in result["rows"] if r.get("decoded_cache_bytes")]
    if decoded:
        # the most tokens; of equal ones, the run that held no features (it measures the cache alone)
        big = max(decoded, key=lambda r: (r["tokens"], r.get("features") == "none"))
        lines += [
            "",
            f"Training's decoded cache: {big['decoded_cache_bytes'] / big['tokens']:.0f} bytes a label token "
            f"({big['tokens']:,} tokens of {big['utterances']:,} utterances).",
        ]
    budgets = {r["feature_memory_gb"] for r in result["rows"] if "feature_memory_gb" in r}
    if budgets:
        lines += ["", f"Training's feature memory budget (feature_memory_gb): {', '.join(map(str, budgets))} GiB."]
    commands = dict.fromkeys(r["made_by"]["command"] for r in result["rows"] if "made_by" in r)
    if commands:
        lines += ["", "Rows made by: " + "; ".join(f"`{c}`" for c in commands) + "."]
    return lines


TABLES: dict[str, DocTable] = {
    "bench-encoder-memo": with_source(f"{RESULTS}/encoder_memo.json", encoder_memo),
    "bench-rtfx-engines": with_source(f"{RESULTS}/rtfx.json", rtfx_engines),
    "bench-rtfx-encoder": with_source(f"{RESULTS}/rtfx.json", rtfx_encoder),
    "bench-rtfx-settings": with_source(f"{RESULTS}/rtfx.json", rtfx_settings),
    "bench-gpu-paths": with_source(f"{RESULTS}/gpu_paths.json", gpu_paths),
    "bench-cache-size": with_source(f"{RESULTS}/cache_teacher.json", cache_size, {"cache_format": CURRENT}),
    "bench-cache-speed": with_source(f"{RESULTS}/cache_teacher.json", cache_speed),
    "bench-train-step": with_source(f"{RESULTS}/train_step.json", train_step),
    "bench-variant-parts": with_source(f"{RESULTS}/variant_parts.json", variant_parts),
    "bench-assist": with_source(f"{RESULTS}/assist.json", assist),
    "bench-scale": with_source(f"{RESULTS}/scale.json", scale),
    "bench-teacher-labels": with_source(f"{RESULTS}/teacher_labels.json", teacher_labels),
}
