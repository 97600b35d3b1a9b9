"""prepare_data: manifests, audio, corpus text, the embedded synthetic corpus, hub datasets, timestamped windows and long-form recordings. Imports only pipeline.core."""
