from twisted.python import usage
from twisted.application.service import MultiService
class Options(usage.Options):
    pass
def makeService(options):
    return MultiService()
