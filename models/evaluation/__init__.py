"""Evaluation protocol (modcrop, Pillow bicubic LR, Y-channel PSNR/SSIM) and `sreval`."""
