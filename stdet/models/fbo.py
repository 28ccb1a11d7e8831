"""Long-term feature bank (LFB) head: feature bank operators (FBO) of Wu et al., 2019.

A short-term model sees a few seconds around the keyframe; the long-term feature bank holds the
RoI features of the whole video (extracted once by a trained short-term detector). For every RoI
the head reads the bank's features of the 60 s around its keyframe and fuses them into the RoI's
own (short-term) feature::

    roi_features (K, C, T, S, S) --avg over T, max over S x S--> st (K, C, 1, 1, 1)
    long_term (B, N, C_lt), row of the RoI's clip ----------> lt (K, C_lt, N, 1, 1)
    fbo(st, lt)                                                    (K, C_fbo, 1, 1, 1)
    out = concatenate [st, fbo(st, lt)]                            (K, C + C_fbo, 1, 1, 1)

``N = window_seconds * max_per_second`` (60 s x 5 = 300): each second of the window holds up to
5 RoI features of that second, zero rows where the second has fewer (or is outside the video).

Operators (``C_fbo``):
- ``FBONonLocal`` (latent channels, 512): short-term features attend to long-term ones in
  ``num_layers`` stacked non-local layers (below);
- ``FBOAvg`` / ``FBOMax`` (``C_lt``): the mean / max over the N long-term features. As in MMAction2
  the zero-padded slots count: the mean divides by N, and the max is at least 0 where a slot is
  empty.

``NonLocalLayer`` (pre-activation, LayerNorm), for ``st (K, c, 1, 1, 1)``, ``lt (K, c, N, 1, 1)``::

    theta = conv(st)  (K, c, 1)    phi = conv(lt)  (K, c, N)    g = conv(lt)  (K, c, N)
    attention = softmax(theta^T phi / sqrt(c))                     (K, 1, N)
    y = g @ attention^T                                            (K, c, 1, 1, 1)
    out = dropout(conv(relu(LayerNorm(y))))                       (K, c, 1, 1, 1)

``FBONonLocal``: ``st, lt`` -> 1x1x1 convs to ``c`` latent channels, dropout on both, then per
layer ``st = st + NonLocalLayer(st, lt)``.

Parameter names are MMAction2's (``fbo.non_local_layer_1.st_feat_conv.weight``) without mmcv's
``ConvModule`` wrapper (``...st_feat_conv.conv.weight`` there), so converting a checkpoint is one
rule; the initialisation is MMAction2's too (Kaiming normal, fan-out, zero biases; LayerNorm 1, 0).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn



def _kaiming_(conv: nn.Conv3d) -> nn.Conv3d:
    """MMAction2's ``kaiming_init``: normal, fan-out, ReLU gain, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


class NonLocalLayer(nn.Module):
    """One attention step of ``FBONonLocal``: ``st (K, c, 1, 1, 1)``, ``lt (K, c, N, 1, 1)`` ->
    ``(K, c, 1, 1, 1)`` (the residual is added by the caller).

    MMAction2 also has a post-activation variant (``pre_activate=False``); no config of the zoo
    uses it, so it is not built here.
    """

    def __init__(self, channels: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.channels = channels
        self.st_feat_conv = _kaiming_(nn.Conv3d(channels, channels, 1))    # theta
        self.lt_feat_conv = _kaiming_(nn.Conv3d(channels, channels, 1))    # phi
        self.global_conv = _kaiming_(nn.Conv3d(channels, channels, 1))     # g
        # over (c, 1, 1, 1): the shape MMAction2 gives it (c, num_st_feat=1, 1, 1)
        self.ln = nn.LayerNorm([channels, 1, 1, 1])
        self.relu = nn.ReLU()
        self.out_conv = _kaiming_(nn.Conv3d(channels, channels, 1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, st: Tensor, lt: Tensor) -> Tensor:
        k, c = st.shape[0], self.channels
        theta = self.st_feat_conv(st).view(k, c, -1)                        # (K, c, 1)
        phi = self.lt_feat_conv(lt).view(k, c, -1)                          # (K, c, N)
        g = self.global_conv(lt).view(k, c, -1)                             # (K, c, N)
        attention = (theta.transpose(1, 2) @ phi / c ** 0.5).softmax(dim=-1)  # (K, 1, N)
        y = (g @ attention.transpose(1, 2)).view(k, c, 1, 1, 1)
        return self.dropout(self.out_conv(self.relu(self.ln(y))))


class FBONonLocal(nn.Module):
    """``st (K, C, 1, 1, 1)``, ``lt (K, C_lt, N, 1, 1)`` -> ``(K, latent_channels, 1, 1, 1)``.

    ``dropout`` applies to the projected short- and long-term features and inside every layer
    (MMAction2 sets the first two from its config, 0.2 in the zoo, and leaves the layers' at
    their default, also 0.2).
    """

    def __init__(self, st_channels: int = 2048, lt_channels: int = 2048,
                 latent_channels: int = 512, num_layers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"FBONonLocal needs at least one layer, got num_layers={num_layers}")
        self.st_feat_conv = _kaiming_(nn.Conv3d(st_channels, latent_channels, 1))
        self.lt_feat_conv = _kaiming_(nn.Conv3d(lt_channels, latent_channels, 1))
        self.st_feat_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lt_feat_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # non_local_layer_1, non_local_layer_2, ...: MMAction2's names
        self.layer_names = tuple(f"non_local_layer_{i + 1}" for i in range(num_layers))
        for name in self.layer_names:
            self.add_module(name, NonLocalLayer(latent_channels, dropout))
        self.out_channels = latent_channels

    def forward(self, st: Tensor, lt: Tensor) -> Tensor:
        st = self.st_feat_dropout(self.st_feat_conv(st))
        lt = self.lt_feat_dropout(self.lt_feat_conv(lt))
        for name in self.layer_names:
            st = st + getattr(self, name)(st, lt)
        return st


class FBOAvg(nn.Module):
    """``lt (K, C_lt, N, 1, 1)`` -> its mean over the N features (zero slots included)."""

    def __init__(self, lt_channels: int = 2048) -> None:
        super().__init__()
        self.out_channels = lt_channels

    def forward(self, st: Tensor, lt: Tensor) -> Tensor:
        return lt.mean(dim=2, keepdim=True)


class FBOMax(nn.Module):
    """``lt (K, C_lt, N, 1, 1)`` -> its max over the N features (zero slots included)."""

    def __init__(self, lt_channels: int = 2048) -> None:
        super().__init__()
        self.out_channels = lt_channels

    def forward(self, st: Tensor, lt: Tensor) -> Tensor:
        return lt.amax(dim=2, keepdim=True)


class LFBHead(nn.Module):
    """The shared head of the LFB detectors (MMAction2's ``FBOHead``).

    Args:
        in_channels: C of the RoI features (2048 for SlowOnly R50).
        fbo: the feature bank operator, ``"nl"`` (non-local) | ``"avg"`` | ``"max"``.
        num_long_term: N, long-term features per clip (window seconds x features per second).
        long_term_channels: C_lt of the bank's features.
        latent_channels, num_layers, dropout: the non-local operator's (``"nl"`` only).

    ``forward(roi_features (K, C, T, S, S), context, rois (K, 5), long_term (B, N, C_lt))``
    -> ``(K, out_channels, 1, 1, 1)``, ``out_channels = C + latent`` (``"nl"``: 2560) or
    ``C + C_lt`` (``"avg"``, ``"max"``: 4096). ``context`` is not used.

    Every RoI of a clip reads the same long-term sample: ``long_term[i]`` is sampled once per
    keyframe by the data pipeline. MMAction2 samples the bank again for every RoI (the same
    window, a different random choice of features in seconds holding more than 5).
    """

    def __init__(self, in_channels: int = 2048, fbo: str = "nl", num_long_term: int = 300,
                 long_term_channels: int = 2048, latent_channels: int = 512, num_layers: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.num_long_term = num_long_term
        self.long_term_channels = long_term_channels
        if fbo == "nl":
            self.fbo: nn.Module = FBONonLocal(in_channels, long_term_channels, latent_channels,
                                              num_layers, dropout)
        elif fbo == "avg":
            self.fbo = FBOAvg(long_term_channels)
        elif fbo == "max":
            self.fbo = FBOMax(long_term_channels)
        else:
            raise ValueError(f"fbo must be 'nl', 'avg' or 'max', got {fbo!r}")
        self.out_channels = in_channels + self.fbo.out_channels

    def forward(self, roi_features: Tensor, context: Tensor | None, rois: Tensor,
                long_term: Tensor | None = None) -> Tensor:
        expected = f"(B, {self.num_long_term}, {self.long_term_channels})"
        if long_term is None:
            raise ValueError("an LFB detector needs long-term features (batch['long_term']) of "
                             f"shape {expected}, one row per clip; got None")
        if long_term.ndim != 3 or tuple(long_term.shape[1:]) != (self.num_long_term,
                                                                  self.long_term_channels):
            raise ValueError(f"long-term features must have shape {expected}, "
                             f"got {tuple(long_term.shape)}")
        # (K, C, 1, 1, 1): average over time, max over the RoI's S x S
        st = roi_features.mean(dim=2, keepdim=True).amax(dim=(3, 4), keepdim=True)
        lt = long_term.to(st.device, st.dtype).index_select(0, rois[:, 0].long())   # (K, N, C_lt)
        lt = lt.transpose(1, 2).contiguous()[..., None, None]              # (K, C_lt, N, 1, 1)
        return torch.cat([st, self.fbo(st, lt)], dim=1)
