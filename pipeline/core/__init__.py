"""What every stage shares: config, errors, the stage runner, progress, atomic files, scoring, languages, torch.distributed helpers and the encoder memo. Imports nothing else of pipeline."""
