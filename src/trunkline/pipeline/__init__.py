"""trunkline.pipeline."""
