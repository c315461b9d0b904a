"""Image domain: dataset pipelines, the VAE codec for latent-space training, FID and grids.

Submodules are imported explicitly (``from domains.images.vae import load_vae``) so that
importing the package stays cheap.
"""
