"""The transcode domain: a verified upload becomes a rendition and a thumbnail (worker.py: the handler;
the job in small pieces: limits, probing, the ffmpeg commands, a bounded run, the job)."""
