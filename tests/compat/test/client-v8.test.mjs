// Compatibility suite against the real @metamask/core-backend client (v8).
import { defineSuite } from '../lib/suite.mjs';

defineSuite('v8');
