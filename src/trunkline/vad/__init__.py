"""trunkline.vad."""
