"""Preference strength and label cleaning (Secrets of RLHF II §2), and the ensembles they rest on.

ensemble   K reward heads on a frozen backbone, or independently trained reward models
scoring    rewards (N x K) from a reward model or an ensemble directory
crossfit   out-of-sample members: fold models and their resampled heads
strength   the mean and spread of each pair's margin over the members
noise      the label-noise rate and P(label wrong) from the margins
clean      the rules that flip, smooth, re-margin or drop pairs (pure)
"""
