"""Optional Triton kernels. Each module here pairs a kernel with the torch reference it must
equal and is imported lazily (through :class:`overparam.backend.dispatch.Implementations`'s
``triton_loader``), so ``import overparam`` never imports triton."""
