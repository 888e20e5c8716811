"""The flywheel: G generations of traffic -> curate -> reward model -> rejection sampling + SFT -> RL in the
coupled trainer -> evaluate -> predicted lift -> simulated A/B test -> ship or not (`rm_lab flywheel`)."""
