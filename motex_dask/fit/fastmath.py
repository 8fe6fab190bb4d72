"""numba fastmath flags shared by the batched engine's kernels."""

# No "reassoc"/"contract": with them LLVM may sum in an order that depends on how a kernel was
# specialised and vectorised, and a resumed run must give bit-identical results (seen in CI).
FAST = {"arcp", "nsz"}  # NaN/inf semantics kept
