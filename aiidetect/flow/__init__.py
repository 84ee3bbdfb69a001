"""CLIP-Flow: a normalizing flow on frozen CLIP features, trained on real
photos and spectrally modified proxies of them (never on AI images)."""
from .model import FeatureFlow, FlowConfig, build_flow, flow_from_head

__all__ = ["FeatureFlow", "FlowConfig", "build_flow", "flow_from_head"]
