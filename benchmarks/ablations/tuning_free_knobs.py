"""Ablation of the tuning-free Nesterov prototype knobs (run: PYTHONPATH=. python benchmarks/ablations/tuning_free_knobs.py PROBLEM NAMES SCHEDULE)."""
import sys, time, json
import polyak_optax as po, optax
from benchmarks import tuning_free as T
prob = sys.argv[1]; names = sys.argv[2].split(','); sched = sys.argv[3]
sizes = dict(T.REDUCED[prob]);
if len(sys.argv) > 4: sizes.update(json.loads(sys.argv[4]))
V = {
 'v_base': dict(),
 'v_lw': dict(layerwise=True),
 'v_lws9': dict(layerwise=True, smoothing=0.9),
 'v_g2': dict(confidence=2.0),
 'v_nocorr': dict(correct=False, max_learning_rate=0.1),
 'v_s9': dict(smoothing=0.9),
 'v_g2s9': dict(confidence=2.0, smoothing=0.9),
 'v_adapt': dict(adapt_f_min=True),
 'v_g2adapt': dict(confidence=2.0, adapt_f_min=True),
}
for n in names:
    if n in V:
        kw = V[n]
        T.OPTIMIZERS[n] = (lambda kw: lambda m: po.tuning_free_nesterov(**{**kw, 'max_learning_rate': T._lr(kw.get('max_learning_rate', 1.0), m)}))(kw)
    t = time.time()
    r = T.train_once(prob, n, sched, 0, **sizes)
    print(f"{prob:10s} {n:20s} {sched:9s} {r['test_accuracy']:.4f}", [round(e['test_accuracy'],4) for e in r['epochs']], [round(e['train_loss'],3) for e in r['epochs']], round(r['epochs'][-1]['time_s'],1), 'wall', round(time.time()-t,1), flush=True)
