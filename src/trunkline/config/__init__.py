"""trunkline.config."""
