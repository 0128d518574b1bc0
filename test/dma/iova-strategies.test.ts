// Every registered IOVA strategy passes the shared property suite.
import { IOVA_STRATEGIES } from '../../dma/iova/index.ts';
import { describeIovaStrategy } from './iova-suite.ts';

for (const [name, create] of Object.entries(IOVA_STRATEGIES)) describeIovaStrategy(name, create);
