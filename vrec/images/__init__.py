"""Images to vectors: backbones, decoding and quality facts, the batch embedding loop."""
