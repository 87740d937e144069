"""Seeded random weights for the zoo models: He-style scales (so activations neither vanish nor explode through
a dozen layers) and BatchNorm statistics that are not the identity, so that folding matters; eval mode."""

import torch
import torch.nn as nn


def randomize(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d)):  # (I, O/g, K...): fan-in per output
                fan = m.weight.shape[0] * m.weight[0, 0].numel() / max(1, int(torch.tensor(m.stride).prod()))
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan = m.weight[0].numel()
            else:
                fan = None
            if fan is not None:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            elif isinstance(m, (nn.LSTM, nn.GRU)):
                for p in m.parameters():
                    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / m.hidden_size ** 0.5)
    return model.eval()
