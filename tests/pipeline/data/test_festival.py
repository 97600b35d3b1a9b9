"""Festival voices and gettext texts in the synthetic corpus: speech, settings, encodings, rejections."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import DwPipeError
from pipeline.data import festival
from pipeline.data.audio import AudioError, MissingToolError
from pipeline.data.festival import FestivalVoice, encode_for, synthesize_festival
from pipeline.data.manifest import load_manifest
from pipeline.data.prepare import HFSourceConfig, PrepareDataConfig, prepare_data
from pipeline.data.synthetic import LanguageTexts, SyntheticConfig
from pipeline.data.text import mo_messages, sentence_problem


def write_mo(path: Path, entries: list[tuple[bytes, bytes]]) -> None:
    """A little-endian gettext catalogue holding ``entries`` (msgid, msgstr), in the order given."""
    n = len(entries)
    ids_at, strs_at = 28, 28 + 8 * n
    blob_at = strs_at + 8 * n
    blob, id_table, str_table = b"", b"", b""
    for msgid, _ in entries:
        id_table += struct.pack("<2I", len(msgid), blob_at + len(blob))
        blob += msgid + b"\0"
    for _, msgstr in entries:
        str_table += struct.pack("<2I", len(msgstr), blob_at + len(blob))
        blob += msgstr + b"\0"
    header = b"\xde\x12\x04\x95" + struct.pack("<6I", 0, n, ids_at, strs_at, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + id_table + str_table + blob)


def test_mo_messages_keeps_translated_singular_messages(tmp_path):
    mo = tmp_path / "demo.mo"
    write_mo(
        mo,
        [
            (b"", b"Content-Type: text/plain; charset=ISO-8859-1\n"),
            (b"Open the file.", "Obre el fitxer.".encode("latin-1")),
            (b"menu\x04Close the window.", "Tanca la finestra.".encode("latin-1")),
            (b"One file\x00%d files", b"Un fitxer\x00%d fitxers"),
            (b"Untranslated.", b""),
        ],
    )
    assert list(mo_messages(mo)) == [("Open the file.", "Obre el fitxer."), ("Close the window.", "Tanca la finestra.")]
    (tmp_path / "bad.mo").write_bytes(b"not a catalogue at all")
    with pytest.raises(ValueError, match="not a gettext"):
        list(mo_messages(tmp_path / "bad.mo"))


def test_acronyms_and_mixed_case_names_are_not_spoken():
    assert sentence_problem("GIF-kuvanlukija ei ymmärrä tätä kuvaa.", "fi", 3, 16) == "acronym or mixed-case name"
    assert sentence_problem("Asenna GStreamer nyt heti.", "fi", 3, 16) == "acronym or mixed-case name"
    assert sentence_problem("Tiedoston korvaus ylikirjoittaa sen sisällön.", "fi", 3, 16) is None


def test_speech_settings_change_the_audio():
    text = "Dobrý den, jak se máte?"
    plain = synthesize_festival(text, FestivalVoice("czech_machac"))
    slow = synthesize_festival(text, FestivalVoice("czech_machac", stretch=1.3))
    higher = synthesize_festival(text, FestivalVoice("czech_machac", shift=1.1))
    assert plain.dtype == np.float32 and 0.05 < np.abs(plain).max() <= 1.0
    assert len(slow) / len(plain) == pytest.approx(1.3, rel=0.1)
    assert len(higher) / len(plain) == pytest.approx(1 / 1.1, rel=0.01)
    # HTS voices ignore Duration_Stretch; the engine's own rate stands in for it
    hts = synthesize_festival("Bon dia a tothom.", FestivalVoice("upc_ca_ona_hts"))
    hts_slow = synthesize_festival("Bon dia a tothom.", FestivalVoice("upc_ca_ona_hts", stretch=1.25))
    assert len(hts_slow) / len(hts) == pytest.approx(1.25, rel=0.1)


def test_text_outside_the_voice_encoding_is_refused_with_its_reason():
    assert encode_for("„Ano“ – řekl.", "czech_dita") == '"Ano" - řekl.'.encode("iso-8859-2")
    with pytest.raises(AudioError, match=r"czech_dita reads iso-8859-2, which has no 'ж' \(U\+0436\)"):
        encode_for("Slovo жук.", "czech_dita")
    with pytest.raises(AudioError, match="latin-1, which has no 'č'"):
        encode_for("Això és č.", "upc_ca_ona_hts")


def test_a_missing_voice_names_its_package(monkeypatch):
    monkeypatch.setattr(festival, "installed_voices", lambda: frozenset({"czech_dita"}))
    with pytest.raises(MissingToolError, match=r"apt-get install festvox-czech-machac"):
        festival.check_voices({"czech_dita", "czech_machac"})
    with pytest.raises(DwPipeError, match="unknown Festival voice 'czech_nobody'"):
        festival.check_voices({"czech_nobody"})


CS = [f"Toto je věta číslo {w} našeho testu." for w in ("jedna", "dvě", "tři", "čtyři", "pět", "šest", "sedm")]
CS_OOD = ["Soubor nebyl nalezen na tomto místě.", "Okno se zavře za chvíli."]
FI = [f"Tämä on testin lause numero {w}." for w in ("yksi", "kaksi", "kolme", "neljä", "viisi", "kuusi", "seitsemän")]
FI_OOD = ["Tiedostoa ei löytynyt levyltä.", "Šakki on hieno peli tänään."]  # š: Finnish, but not in Latin-1


def _festival_config(tmp_path: Path, model: Path) -> PrepareDataConfig:
    locale = tmp_path / "locale"
    for lang, texts in (("cs", (CS, CS_OOD)), ("fi", (FI, FI_OOD))):
        for name, sentences in zip(("app", "tool"), texts):
            entries = [(f"Sentence {i}.".encode(), s.encode()) for i, s in enumerate(sentences)]
            write_mo(locale / lang / "LC_MESSAGES" / f"{name}.mo", entries)
    synthetic = SyntheticConfig(
        fortunes_root=tmp_path / "fortunes",
        locale_root=locale,
        languages=("cs", "fi"),
        targets=("cs", "fi"),
        target_sizes={"train": 4, "dev": 1, "test": 2, "test_ood": 2},
        other_sizes={},
        texts={lang: LanguageTexts(("gettext:app",), ("gettext:tool",)) for lang in ("cs", "fi")},
        voices={"train": ("m1",)},
        festival={
            "cs": {
                "train": ("czech_dita", "czech_krb"),
                "dev": ("czech_dita",),
                "test": ("czech_machac",),
                "test_ood": ("czech_machac",),
            },
            "fi": {split: ("suo_fi_lj_diphone",) for split in ("train", "dev", "test", "test_ood")},
        },
        stretch=(1.0, 1.2),
        shift=(0.95, 1.05),
    )
    return PrepareDataConfig(
        source="synthetic",
        out_dir=tmp_path / "prepared",
        model=model,
        seed=3,
        workers=1,
        synthetic=synthetic,
        hf=HFSourceConfig(splits={"train": "train"}),
    )


def test_festival_corpus_records_voice_gender_age_and_rejections(tmp_path, tiny_hf_dir):
    cfg = _festival_config(tmp_path, tiny_hf_dir)
    summary = prepare_data(cfg)
    assert summary["read"] == 18 and summary["kept"] == 17 and summary["rejected"] == 1
    (reject,) = (cfg.out_dir / "rejects.jsonl").read_text().splitlines()
    assert "text not speakable: Festival voice suo_fi_lj_diphone reads latin-1, which has no 'Š'" in reject
    utts = [u for s in ("train", "dev", "test", "test_ood") for u in load_manifest(cfg.out_dir / f"{s}.jsonl")]
    assert {u.source for u in utts} == {"synthetic-festival"}
    people = {(u.speaker, u.gender, u.age) for u in utts}
    assert ("festival:czech_krb", "male", "child") in people and ("festival:czech_dita", "female", "adult") in people
    assert {u.speaker for u in utts if u.split == "test" and u.language == "cs"} == {"festival:czech_machac"}
    design = summary["voices"]["cs"]
    assert design["tests"]["test"] == {"genders": ["male"], "unseen_voices": ["festival:czech_machac"]}
    assert {u.text for u in utts} == set(CS[:7]) | set(CS_OOD) | set(FI) | set(FI_OOD[:1])


def test_festival_config_errors_are_one_line(tmp_path, tiny_hf_dir):
    cfg = _festival_config(tmp_path, tiny_hf_dir)
    wrong = replace(cfg.synthetic, festival={"cs": {**cfg.synthetic.festival["cs"], "dev": ("upc_ca_ona_hts",)}})
    with pytest.raises(DwPipeError, match=r"speak another language"):
        prepare_data(replace(cfg, synthetic=wrong))
    missing = replace(cfg.synthetic, festival={"cs": {"train": ("czech_dita",)}})
    with pytest.raises(DwPipeError, match="names no voice for split dev"):
        prepare_data(replace(cfg, synthetic=missing))
    absent = replace(cfg.synthetic, texts={"cs": LanguageTexts(("gettext:app", "gettext:nothere"), ())})
    with pytest.raises(DwPipeError, match="no text files match 'gettext:nothere'"):
        prepare_data(replace(cfg, synthetic=absent))


# English message -> (cs, fi) translations of a catalogue both languages have
PAIRS = {
    "The file was not found on this disk.": (
        "Soubor nebyl nalezen na tomto počítači.",
        "Tiedostoa ei löytynyt tältä levyltä.",
    ),
    "You have new mail in your box.": ("Máte novou poštu ve schránce.", "Sinulle on tullut uutta postia tänään."),
    "Do you accept this agreement now?": ("Přijímáte nyní tuto smlouvu?", "Hyväksytkö tämän sopimuksen nyt?"),
    "Please wait a little longer.": ("Počkejte prosím ještě chvíli.", FI[0]),  # fi: a train sentence
    "See the manual for GNU tools.": ("Podívejte se do příručky.", "Katso ohjekirjaa nyt heti."),  # English: acronym
}
CS_ONLY = ("The disk is full again today.", "Disk je dnes opět plný.")


def _with_translate_set(cfg: PrepareDataConfig, size: int) -> PrepareDataConfig:
    from pipeline.data.synthetic import TranslateSet

    locale = cfg.synthetic.locale_root
    for i, lang in enumerate(("cs", "fi")):
        entries = [(en.encode(), tr[i].encode()) for en, tr in PAIRS.items()]
        entries += [(CS_ONLY[0].encode(), CS_ONLY[1].encode())] if lang == "cs" else []
        write_mo(locale / lang / "LC_MESSAGES" / "sys.mo", entries)
    translate = TranslateSet(
        languages=("cs", "fi"),
        size=size,
        texts=("gettext:sys",),
        voices={"cs": ("czech_ph",), "fi": ("hy_fi_mv_diphone",)},
    )
    return replace(
        cfg, out_dir=cfg.out_dir.with_name("with-translate"), synthetic=replace(cfg.synthetic, translate=translate)
    )


def test_translate_set_speaks_the_same_english_messages_in_each_language(tmp_path, tiny_hf_dir):
    plain = _festival_config(tmp_path, tiny_hf_dir)
    prepare_data(plain)
    cfg = _with_translate_set(plain, size=3)
    summary = prepare_data(cfg)
    utts = load_manifest(cfg.out_dir / "translate.jsonl")
    assert len(utts) == 6 and {u.split for u in utts} == {"translate"}
    english = {lang: {u.translation for u in utts if u.language == lang} for lang in ("cs", "fi")}
    # the messages clean in English and in both languages, and no sentence of another split
    assert english["cs"] == english["fi"] == set(list(PAIRS)[:3])
    for u in utts:
        assert u.text == PAIRS[u.translation][("cs", "fi").index(u.language)]
    assert {u.speaker for u in utts} == {"festival:czech_ph", "festival:hy_fi_mv_diphone"}
    stats = summary["text_filter"]["translate"]
    assert stats["sentence of another split (fi)"] == 1 and stats["English: acronym or mixed-case name"] == 2
    # the other splits are what they were without the translate set
    for split in ("train", "dev", "test", "test_ood"):
        assert (cfg.out_dir / f"{split}.jsonl").read_text() == (plain.out_dir / f"{split}.jsonl").read_text()
    assert "translation" not in (cfg.out_dir / "train.jsonl").read_text()
    with pytest.raises(DwPipeError, match="3 messages are clean sentences in English and in every one of"):
        prepare_data(_with_translate_set(plain, size=4))


def test_a_pool_is_drawn_after_the_translate_set_and_changes_none_of_its_draws(tmp_path, tiny_hf_dir):
    """Planning only (no audio): the pool's festival voices are the train voices, and every other item, the
    translate set's included, is planned as it was without the pool."""
    from pipeline.data.synthetic import plan_corpus

    plain = _with_translate_set(_festival_config(tmp_path, tiny_hf_dir), size=3).synthetic
    plain = replace(plain, sizes_by_language={"cs": {"test": 1}})  # leaves one cs sentence unused
    pooled = replace(plain, sizes_by_language={"cs": {"test": 1, "unlabelled": 1}})
    before, _ = plan_corpus(plain, seed=3)
    after, _ = plan_corpus(pooled, seed=3)
    (pool,) = [it for it in after if it.split == "unlabelled"]
    assert [it for it in after if it.split != "unlabelled"] == before
    assert pool.language == "cs" and pool.voice.voice in plain.festival["cs"]["train"]
    assert pool.text in CS and pool.text not in {it.text for it in before}
