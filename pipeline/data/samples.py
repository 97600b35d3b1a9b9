"""A small fixed set of sentences in ten Whisper languages, for parity checks.

Two short everyday sentences per language, written for this project. The
embedded corpus (prepare_data) draws its text from real corpora instead.
"""

from __future__ import annotations

SAMPLE_SENTENCES: dict[str, tuple[str, str]] = {
    "en": ("The weather is nice today.", "Please close the window before you leave."),
    "de": ("Guten Morgen, wie geht es dir heute?", "Der Zug nach Berlin fährt um acht Uhr ab."),
    "es": ("Buenos días, ¿cómo estás hoy?", "El tren sale de la estación a las ocho."),
    "it": ("Buongiorno, come stai oggi?", "Il treno parte dalla stazione alle otto."),
    "pt": ("Bom dia, como você está hoje?", "O comboio parte da estação às oito horas."),
    "pl": ("Dzień dobry, jak się dzisiaj masz?", "Pociąg do Warszawy odjeżdża o ósmej rano."),
    "ru": ("Доброе утро, как у тебя дела сегодня?", "Поезд в Москву отправляется в восемь часов."),
    "cs": ("Dobré ráno, jak se dnes máš?", "Vlak do Prahy odjíždí v osm hodin ráno."),
    "bg": ("Добро утро, как си днес?", "Влакът за София тръгва в осем часа сутринта."),
    "zh": ("今天天气很好。", "火车早上八点从车站出发。"),
}

# espeak-ng voice per language (its own names: "cmn" is Mandarin).
ESPEAK_VOICE: dict[str, str] = {lang: lang for lang in SAMPLE_SENTENCES} | {"zh": "cmn", "pt": "pt"}
