"""The transcode job in small pieces: limits, probing, the ffmpeg commands, a bounded run, the job."""
