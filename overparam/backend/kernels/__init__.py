"""Optional Triton kernels. Each module here pairs a kernel with the torch reference it must
equal (in the backend module of the same name) and is imported lazily, through the ``loader``
of its :func:`overparam.backend.dispatch.register` call, so ``import overparam`` never imports triton."""
