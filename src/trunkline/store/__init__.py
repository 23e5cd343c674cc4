"""trunkline.store."""
