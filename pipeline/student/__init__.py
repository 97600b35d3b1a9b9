"""train_student and export_student: student models, losses, the training loop and checkpoints, and the per-language export."""
