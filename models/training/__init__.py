"""Training of the learned upsamplers (`srtrain`)."""
