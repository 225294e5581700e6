"""The diffusion model as a classifier (Li et al. 2023; the TMDC paper): schedules, scoring, Truth Maximization."""
