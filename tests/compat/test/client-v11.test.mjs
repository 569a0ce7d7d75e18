// Compatibility suite against the real @metamask/core-backend client (v11).
import { defineSuite } from '../lib/suite.mjs';

defineSuite('v11');
