from .. import _Missing as SubtitleStream  # noqa
