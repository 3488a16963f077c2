"""Text-to-video on top of semcodec token streams (language model + diffusion decoder): later work."""
