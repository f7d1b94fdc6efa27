from . import _Missing as InputContainer, _Missing as OutputContainer  # noqa
def __getattr__(name):
    from . import _Missing
    return _Missing
