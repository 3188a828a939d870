"""A generated MUSIC-AVQA look-alike: videos of instruments whose questions have known answers.

Data for the demo and the tests, not part of extraction: `avaf-synth` writes videos and annotation files
that `avaf-extract` then reads like any real set.

    scene  who plays where and when;  render  the video and audio;  templates, questions  the questions
    generate  the whole set;  cli  avaf-synth
"""

from avaf.extract.synth.generate import SynthSpec, generate

__all__ = ["SynthSpec", "generate"]
