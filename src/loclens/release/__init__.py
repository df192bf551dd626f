"""Release stage: render lens views into Hugging Face-layout Parquet shards, then write the
manifest and the dataset card."""
