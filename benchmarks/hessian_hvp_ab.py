"""Interleaved A/B of one retained-graph HVP: overparam vs PyHessian on the benchmark CNN (4 alternating
rounds, medians). Run like benchmarks/hessian_bench.py. Interleaving cancels load drift on a shared machine."""
import time, torch, importlib.util, statistics
import overparam.hessian as oh
from overparam.backend.random import gaussian, make_generator
from overparam.backend import vec
spec = importlib.util.spec_from_file_location("hb", "benchmarks/hessian_bench.py"); hb = importlib.util.module_from_spec(spec); spec.loader.exec_module(hb)
from pyhessian import hessian as PyHessian
from pyhessian.utils import hessian_vector_product
F=torch.nn.functional
g=make_generator(0); model=hb.cnn(); x=gaussian((256,3,32,32),generator=g); y=torch.randint(0,10,(256,),generator=g)
H=oh.hessian(model, F.cross_entropy,(x,y), check=False)
phm = PyHessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
vs=[torch.randn(p.shape) for p in phm.params]; vflat=vec.flatten(vs)
leaves, gr = H._graph
res={"ours_flat":[], "ours_raw":[], "ph":[]}
for _ in range(4):
    t=time.perf_counter(); H@vflat; res["ours_flat"].append(time.perf_counter()-t)
    t=time.perf_counter(); torch.autograd.grad(gr, leaves, tuple(vs), retain_graph=True); res["ours_raw"].append(time.perf_counter()-t)
    t=time.perf_counter(); hessian_vector_product(phm.gradsH, phm.params, vs); res["ph"].append(time.perf_counter()-t)
print({k: round(statistics.median(v),3) for k,v in res.items()})
