"""Flow policy on the GPU (part of benchmarks/gpu_check.sh): DoPr-AdamW steps on a flow-mlp with no host
synchronization (torch.cuda sync debug mode), seeded per-row sampling reproducible, and the same
generators giving the same samples on CUDA and on the CPU (noise is drawn on the generators' device).
Runs on the CPU too (without the sync check)."""
import torch
DEV = "cuda" if torch.cuda.is_available() else "cpu"
from policies import make_policy
from dopr_robot.optim import make_optimizer
torch.manual_seed(0)
p = make_policy("flow-mlp", 18, 3, 1, 4, width=64, depth=1).to(DEV)
opt = make_optimizer("dopr-adamw", p, lr=1e-3)
obs = torch.randn(32, 1, 18, device=DEV); act = torch.randn(32, 4, 3, device=DEV)
batch = {"obs": obs, "actions": act, "obs_mask": torch.ones(32, 1, dtype=torch.bool, device=DEV),
         "action_mask": torch.ones(32, 4, dtype=torch.bool, device=DEV)}
for step in range(6):
    loss = p.loss(batch); opt.zero_grad(); loss.backward()
    if step >= 2 and DEV == "cuda": torch.cuda.set_sync_debug_mode("error")
    opt.step()
    if DEV == "cuda": torch.cuda.set_sync_debug_mode("default")
p.eval()
gens = [torch.Generator().manual_seed(i) for i in range(4)]
a1 = p.predict(obs[:4].cpu().to(DEV), generator=gens)
gens = [torch.Generator().manual_seed(i) for i in range(4)]
a2 = p.predict(obs[:4], generator=gens)
print("flow-mlp on cuda: numerics", opt.numerics(), "same seed same actions:", bool(torch.equal(a1, a2)), a1.device)
pc = make_policy("flow-mlp", 18, 3, 1, 4, width=64, depth=1); pc.load_state_dict({k: v.cpu() for k, v in p.state_dict().items()}); pc.eval()
gens = [torch.Generator().manual_seed(i) for i in range(4)]
a3 = pc.predict(obs[:4].cpu(), generator=gens)
print("cuda vs cpu sample, same generators: max diff", float((a1.cpu() - a3).abs().max()))
