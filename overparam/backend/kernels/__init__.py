"""Optional Triton kernels. Each module here pairs a kernel with the torch reference it must
equal (in the backend module of the same name) and is imported lazily, through the ``loader``
of its :func:`overparam.backend.dispatch.register` call below, so ``import overparam`` never
imports triton. The references register first (importing them here), the kernels after them.
"""

from .. import dispatch
from .. import nm as _nm  # noqa: F401  (registers the N:M reference and batched implementations first)


def _load_nm():
    from .nm import nm_mask_triton

    return nm_mask_triton


dispatch.register("nm_mask", "triton", loader=_load_nm, available=dispatch.triton_unavailable, priority={"cuda": 2})


from .. import softmax_ce as _softmax_ce  # noqa: E402,F401  (registers the softmax-CE reference first)


def _load_softmax_ce():
    from .softmax_ce import softmax_ce_triton

    return softmax_ce_triton


dispatch.register("softmax_ce_hvp", "triton", loader=_load_softmax_ce, available=dispatch.triton_unavailable,
                  priority={"cuda": 2})


from .. import sparse24 as _sparse24  # noqa: E402,F401  (registers the 2:4 compress reference first)


def _load_sparse24():
    from .sparse24 import nm_compress_24_triton

    return nm_compress_24_triton


dispatch.register("nm_compress_24", "triton", loader=_load_sparse24, available=dispatch.triton_unavailable,
                  priority={"cuda": 2})


from .. import packed_step as _packed_step  # noqa: E402,F401  (registers the packed-step references first)


def _load_packed(name):
    def load():
        from . import packed_step

        return getattr(packed_step, name)

    return load


dispatch.register("packed_adamw_step", "triton", loader=_load_packed("packed_adamw_triton"),
                  available=dispatch.triton_unavailable, priority={"cuda": 2})
dispatch.register("packed_sgd_step", "triton", loader=_load_packed("packed_sgd_triton"),
                  available=dispatch.triton_unavailable, priority={"cuda": 2})
