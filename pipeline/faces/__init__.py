"""Faces: embeddings, an enrolled gallery, recognition per track, and face detection at its own rate."""
