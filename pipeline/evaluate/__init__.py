"""quantize, benchmark and longform: CTranslate2 conversion, decoding runs and their scoring, translation and long-form metrics, CTranslate2 tuning, seed statistics."""
