// Compatibility suite against the real @metamask/core-backend client (v4).
import { defineSuite } from '../lib/suite.mjs';

defineSuite('v4');
