"""Audio codecs (G.711, G.722, L16), resampling and reframing: pure functions over bytes and numpy."""
