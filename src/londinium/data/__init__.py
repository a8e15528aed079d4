"""Token shards: corpus splits encoded to memmaps (`shards`), and batches read from them (`loader`)."""
