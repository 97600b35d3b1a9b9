"""cache_teacher: the teacher-forced top-k cache (build, shard format, reader, dataset card)."""
