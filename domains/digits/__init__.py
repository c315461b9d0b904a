"""The 8x8 handwritten digits that ship with scikit-learn: the default, no-download domain."""
